#!/usr/bin/env bash
# Shared-memory bank conflicts of the Volta traits (kernel_traits_sm70.cuh) on a newer GPU, with
# Nsight Compute: the conflict-free scheme (padded rows, permuted atoms) against a plain
# row-major layout of the same tiles (FASTATTN_CUDA_SM70_SMEM=plain, driver builds only).
# One attention kernel launch per (scheme, shape), counters summed over the whole kernel.
# Usage: volta_bank_conflicts.sh CUDA_CHECK_BINARY   (built by build_check.sh)
set -euo pipefail
BIN=${1:?usage: volta_bank_conflicts.sh path/to/cuda_check}
LOGS=${OUT:-${TMPDIR:-/tmp}}
METRICS=l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,\
l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum,\
smsp__inst_executed_op_shared_ld.sum,smsp__inst_executed_op_shared_st.sum,gpu__time_duration.sum
for shape in 1,16,1024,64,0 1,16,1024,128,0 1,16,1024,64,1; do
  for scheme in conflict-free plain; do
    log=$LOGS/ncu_sm70_${scheme}_${shape//,/_}.csv
    FASTATTN_CUDA_SM70_SMEM=$([ $scheme = plain ] && echo plain || echo padded) \
      ncu --csv --metrics "$METRICS" --kernel-name regex:attention_fwd_kernel --launch-count 1 \
      "$BIN" bench --traits 70 --fp16 --reps 1 --shape "$shape" > "$log" 2> "$log.err" || { cat "$log.err" >&2; exit 1; }
    # "ID","Process ID",...,"Metric Name","Metric Unit","Metric Value": one line per metric
    python3 - "$log" "$scheme" "$shape" <<'PY'
import csv, sys
lines = open(sys.argv[1]).read().splitlines()
lines = lines[next(i for i, l in enumerate(lines) if l.startswith('"ID"')):]  # after the program's output
rows = list(csv.reader(lines))
head = rows[0]; name, value = head.index("Metric Name"), head.index("Metric Value")
m = {r[name]: r[value].replace(",", "") for r in rows[1:]}
short = lambda k: m.get(k, "?")
print(f"SM70 SMEM {sys.argv[2]:13s} (B,H,S,D,causal)=({sys.argv[3]}): "
      f"ld conflicts {short('l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum')} "
      f"of {short('l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum')} wavefronts "
      f"({short('smsp__inst_executed_op_shared_ld.sum')} instructions), "
      f"st conflicts {short('l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum')} "
      f"of {short('l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum')} wavefronts "
      f"({short('smsp__inst_executed_op_shared_st.sum')} instructions), "
      f"time {short('gpu__time_duration.sum')} ns")
PY
  done
done
# Per SASS instruction (shape 1): where the excess shared wavefronts of each scheme come from
# (Source Counters: wavefronts against the ideal count of the access size, per instruction).
for scheme in conflict-free plain; do
  rep=${TMPDIR:-/tmp}/ncu_sm70_$scheme
  FASTATTN_CUDA_SM70_SMEM=$([ $scheme = plain ] && echo plain || echo padded) \
    ncu -f -o "$rep" --section SourceCounters --kernel-name regex:attention_fwd_kernel --launch-count 1 \
    "$BIN" bench --traits 70 --fp16 --reps 1 --shape 1,16,1024,64,0 > /dev/null 2> "$rep.err" || { cat "$rep.err" >&2; exit 1; }
  ncu -i "$rep.ncu-rep" --page source --csv --print-source sass > "$rep.sass.csv" 2>> "$rep.err" || { cat "$rep.err" >&2; exit 1; }
  python3 - "$rep.sass.csv" "$scheme" <<'PY'
import collections, csv, sys
rows = list(csv.reader(open(sys.argv[1])))[1:]  # line 1 names the kernel
head, rows = rows[0], rows[1:]
col = {n: head.index(n) for n in ("Source", "Instructions Executed", "L1 Wavefronts Shared",
                                  "L1 Wavefronts Shared Ideal", "L1 Wavefronts Shared Excessive")}
num = lambda r, n: int(r[col[n]].replace(",", "") or 0)
by_op = collections.defaultdict(lambda: [0, 0, 0, 0])
for r in rows:
    if num(r, "L1 Wavefronts Shared") == 0:
        continue
    words = r[col["Source"]].split()
    op = words[1] if words[0].startswith("@") else words[0]  # skip a predicate
    for i, n in enumerate(("Instructions Executed", "L1 Wavefronts Shared", "L1 Wavefronts Shared Ideal",
                           "L1 Wavefronts Shared Excessive")):
        by_op[op][i] += num(r, n)
for op, (inst, wf, ideal, excess) in sorted(by_op.items(), key=lambda kv: -kv[1][1]):
    print(f"SM70 SASS {sys.argv[2]:13s} {op:8s}: {inst:9d} instructions, {wf:9d} wavefronts, ideal {ideal:9d}, excessive {excess:9d}")
PY
done
