#include "cann_api.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace fastattn::cann {
namespace {

// dlopen by name (LD_LIBRARY_PATH, as CANN's set_env.sh sets it), then in the usual install folders.
void* open_library(const char* name, std::string* why) {
  std::vector<std::string> candidates = {name};
  for (const char* var : {"ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"})
    if (const char* dir = std::getenv(var); dir && *dir) candidates.push_back(std::string(dir) + "/lib64/" + name);
  for (const char* dir : {"/usr/local/Ascend/ascend-toolkit/latest/lib64/", "/usr/local/Ascend/cann/lib64/"})
    candidates.push_back(std::string(dir) + name);
  std::string first_error;
  for (const std::string& path : candidates) {
    dlerror();
    if (void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) return handle;
    if (first_error.empty()) {
      const char* e = dlerror();
      first_error = e ? e : "dlopen failed";
    }
  }
  *why = first_error;
  return nullptr;
}

// The handles the functions come from: the test double alone, or CANN's three libraries.
struct Libraries {
  void* runtime = nullptr;
  void* meta = nullptr;
  std::vector<void*> op;  // searched in order
  std::string names;
};

bool open_libraries(Libraries* libs, std::string* why) {
  if (const char* fake = std::getenv("FASTATTN_CANN_TEST_DOUBLE"); fake && *fake) {
    dlerror();
    void* h = dlopen(fake, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      *why = std::string("FASTATTN_CANN_TEST_DOUBLE=") + fake + ": " + (e ? e : "dlopen failed");
      return false;
    }
    libs->runtime = libs->meta = h;
    libs->op = {h};
    libs->names = std::string("test double ") + fake;
    return true;
  }
  std::string e;
  if (!(libs->runtime = open_library("libascendcl.so", &e))) {
    *why = e;
    return false;
  }
  if (!(libs->meta = open_library("libnnopbase.so", &e))) {
    *why = e;
    return false;
  }
  libs->names = "libascendcl.so, libnnopbase.so";
  for (const char* name : {"libopapi_transformer.so", "libopapi.so"}) {
    std::string ignored;
    if (void* h = open_library(name, &ignored)) {
      libs->op.push_back(h);
      libs->names += std::string(", ") + name;
    }
  }
  if (libs->op.empty()) {
    *why = "neither libopapi_transformer.so nor libopapi.so can be opened (" + e + ")";
    return false;
  }
  return true;
}

void* find_symbol(const Libraries& libs, const char* lib_kind, const char* name) {
  const std::string kind = lib_kind;
  if (kind == "Runtime") return dlsym(libs.runtime, name);
  if (kind == "Meta") return dlsym(libs.meta, name);
  for (void* h : libs.op)
    if (void* p = dlsym(h, name)) return p;
  return nullptr;
}

std::string describe_error(const Api* a, const char* function, int code) {
  std::string text = std::string(function) + " failed with error " + std::to_string(code);
  if (a && a->aclGetRecentErrMsg)
    if (const char* msg = a->aclGetRecentErrMsg(); msg && *msg) text += ": " + std::string(msg);
  return text;
}

int major_of(const std::string& version) {
  size_t i = 0;
  while (i < version.size() && (version[i] < '0' || version[i] > '9')) ++i;
  int major = -1;
  for (; i < version.size() && version[i] >= '0' && version[i] <= '9'; ++i)
    major = (major < 0 ? 0 : major * 10) + (version[i] - '0');
  return major;
}

std::string query_version(const Api& a) {
  if (a.aclsysGetCANNVersion) {
    aclCANNPackageVersion v{};
    if (a.aclsysGetCANNVersion(kAclPkgNameCann, &v) == kAclSuccess && v.version[0]) 
      return std::string(v.version, strnlen(v.version, sizeof v.version));
  }
  if (a.aclsysGetVersionStr) {
    // The package name is a folder of ${INSTALL_DIR}/share/info; the runtime's is always there.
    for (const char* package : {"cann", "runtime"}) {
      char name[32], version[128] = {};
      std::snprintf(name, sizeof name, "%s", package);
      if (a.aclsysGetVersionStr(name, version) == kAclSuccess && version[0]) return version;
    }
  }
  return "";
}

Runtime discover() {
  Runtime r;
  Libraries libs;
  std::string why;
  if (!open_libraries(&libs, &why)) {
    r.missing = why;
    return r;
  }
  static Api table;  // lives as long as the process (the libraries are never closed)
  std::string absent;
#define FASTATTN_CANN_BIND(lib, name, ret, params, required, source)                     \
  table.name = reinterpret_cast<name##_fn>(find_symbol(libs, #lib, #name));              \
  if (!table.name && required) absent += std::string(absent.empty() ? "" : ", ") + #name;
  FASTATTN_CANN_FUNCTIONS(FASTATTN_CANN_BIND)
#undef FASTATTN_CANN_BIND
  if (!absent.empty()) {
    r.missing = libs.names + " lack " + absent;
    return r;
  }
  table.libraries = libs.names;
  r.api = &table;

  const aclError init = table.aclInit(nullptr);
  if (init != kAclSuccess && init != kAclErrorRepeatInitialize) {
    r.device_error = describe_error(&table, "aclInit", init);
    return r;
  }
  r.cann_version = query_version(table);
  if (r.cann_version.empty())
    r.version_gate = "the CANN version cannot be read (aclsysGetCANNVersion / aclsysGetVersionStr), so the "
                     "signature of aclnnFusedInferAttentionScore (V1) cannot be vouched for";
  else if (major_of(r.cann_version) < kMinCannMajor)
    r.version_gate = "CANN " + r.cann_version + " is older than " + std::to_string(kMinCannMajor) +
                     ".0, the first release whose aclnnFusedInferAttentionScore (V1) this build calls";
  if (const char* soc = table.aclrtGetSocName()) r.soc_name = soc;
  // The operator's documents list V1 for Atlas A2 (Ascend910B*) only: not A3, not the Atlas
  // 200I/500 A2 or 300I inference cards (Ascend310B / Ascend310P).
  if (r.soc_name.rfind("Ascend910B", 0) != 0)
    r.soc_gate = "aclnnFusedInferAttentionScore (V1) is documented for Atlas A2 (Ascend910B*) only; this SoC is " +
                 (r.soc_name.empty() ? std::string("unknown") : r.soc_name);
  uint32_t count = 0;
  if (const aclError e = table.aclrtGetDeviceCount(&count); e != kAclSuccess)
    r.device_error = describe_error(&table, "aclrtGetDeviceCount", e);
  else
    r.device_count = count;
  return r;
}

}  // namespace

const Runtime& runtime() {
  static const Runtime r = discover();
  return r;
}

const Api& api() {
  const Runtime& r = runtime();
  if (!r.api) throw std::runtime_error("CANN not found: " + r.missing);
  return *r.api;
}

std::string error_text(const char* function, int code) {
  if (code == 0) return "";
  return describe_error(runtime().api, function, code);
}

void check(const char* function, int code) {
  if (code != 0) throw std::runtime_error(error_text(function, code));
}

void set_device(int32_t device) {
  int32_t current = -1;
  if (api().aclrtGetDevice(&current) == kAclSuccess && current == device) return;  // fails when none is set
  check("aclrtSetDevice", api().aclrtSetDevice(device));
}

}  // namespace fastattn::cann
