/* A link-time stand-in for the NVIDIA driver library (libcuda.so.1), like the stubs/libcuda.so
 * a full CUDA toolkit ships and the PyPI wheels do not. ggml-cuda calls these driver entry
 * points for its virtual-memory pool; the linker only needs their names. This file is never
 * loaded at run time: libggml-cuda.so records the soname libcuda.so.1, which the driver provides
 * on a GPU machine, and on a machine without one the backend fails to load and llama.cpp runs
 * on the CPU. Every function reports CUDA_ERROR_STUB_LIBRARY (34) should it ever be called. */
#define STUB(name) int name(void) { return 34; }
STUB(cuDeviceGet)
STUB(cuDeviceGetAttribute)
STUB(cuGetErrorString)
STUB(cuMemAddressFree)
STUB(cuMemAddressReserve)
STUB(cuMemCreate)
STUB(cuMemGetAllocationGranularity)
STUB(cuMemMap)
STUB(cuMemRelease)
STUB(cuMemSetAccess)
STUB(cuMemUnmap)
