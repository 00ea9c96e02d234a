# CPU kernels are compiled once per instruction set (like ATen's DispatchStub) and chosen at run
# time from at::get_cpu_capability(), so one binary is fast on AVX-512 and still runs without AVX2.
# The DEFAULT object must come first at link time: inline functions outside the capability
# namespaces are then taken from the baseline build.
set(WRPN_CPU_CAPABILITIES DEFAULT AVX2 AVX512)
set(WRPN_CPU_FLAGS_DEFAULT "")
set(WRPN_CPU_FLAGS_AVX2 -mavx2 -mfma -mf16c)
set(WRPN_CPU_FLAGS_AVX512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c)

# at::parallel_for is inline: with Torch's OpenMP backend it runs in parallel only in code compiled
# with OpenMP (as Torch's C++ extensions are), else on one thread whatever at::set_num_threads says.
# Torch ships libgomp.so.1 and loads it first, so the process keeps a single OpenMP runtime.
find_package(OpenMP COMPONENTS CXX)

# wrpn_add_cpu_kernels(<target> <sources...>): object libraries <target>_<CAP> for each capability;
# a target that links them must also link $<TARGET_NAME_IF_EXISTS:OpenMP::OpenMP_CXX>.
function(wrpn_add_cpu_kernels target)
  set(objects "")
  foreach(cap IN LISTS WRPN_CPU_CAPABILITIES)
    set(lib ${target}_${cap})
    add_library(${lib} OBJECT ${ARGN})
    target_compile_definitions(${lib} PRIVATE CPU_CAPABILITY=${cap} CPU_CAPABILITY_${cap})
    target_compile_options(${lib} PRIVATE ${WRPN_CPU_FLAGS_${cap}} -O3)
    target_include_directories(${lib} PRIVATE ${PROJECT_SOURCE_DIR}/kernels/include)
    target_link_libraries(${lib} PRIVATE torch $<TARGET_NAME_IF_EXISTS:OpenMP::OpenMP_CXX>)
    list(APPEND objects $<TARGET_OBJECTS:${lib}>)
  endforeach()
  set(${target}_OBJECTS ${objects} PARENT_SCOPE)
endfunction()
