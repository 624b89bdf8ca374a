# Cross-compiling for aarch64 Linux on x86-64 with Debian's g++-aarch64-linux-gnu (NEON is part of
# the armv8-a baseline, so kernels/cpu builds its "neon" copy). cmake/build_wheels.py passes it.
#
# Python: the interpreter that runs CMake's helper scripts is the build machine's; the module is
# compiled against the target's headers (FASTATTN_TARGET_PYTHON_INCLUDE: one folder holding
# Python.h and the target's pyconfig.h) and named with the target's suffix
# (PYTHON_MODULE_EXTENSION, e.g. .cpython-311-aarch64-linux-gnu.so), which pybind11 would
# otherwise ask the build machine's interpreter for.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(_triple aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${_triple}-gcc)
set(CMAKE_CXX_COMPILER ${_triple}-g++)

# Libraries and headers from the cross toolchain's sysroot; programs from the build machine.
set(CMAKE_FIND_ROOT_PATH /usr/${_triple})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)  # pybind11's config lives in the build machine's Python

# Try-compiles see these too (CMake forwards only listed variables into them).
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES FASTATTN_TARGET_PYTHON_INCLUDE PYTHON_MODULE_EXTENSION)
if(FASTATTN_TARGET_PYTHON_INCLUDE)
  # Plain variables shadow the build machine's values that scikit-build-core puts in the cache.
  set(Python_INCLUDE_DIR "${FASTATTN_TARGET_PYTHON_INCLUDE}")
  set(Python3_INCLUDE_DIR "${FASTATTN_TARGET_PYTHON_INCLUDE}")
endif()
if(PYTHON_MODULE_EXTENSION)
  set(PYTHON_MODULE_DEBUG_POSTFIX "" CACHE INTERNAL "")
  set(PYTHON_IS_DEBUG 0 CACHE INTERNAL "")
endif()
