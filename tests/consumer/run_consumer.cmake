# cmake -P script: install the build tree, configure and build tests/consumer against it, run it
# (it trains for one short epoch on DIGITS_ROOT, writing under WORK_DIR).
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${WRPN_BUILD_DIR} --prefix ${WORK_DIR}/prefix
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "install failed (${rc})")
endif()
foreach(f include/wrpn/wrpn.h include/wrpn/ops.h include/wrpn/version.h
          include/wrpn/train/trainer.h include/wrpn/train/options.h lib/libwrpn.so
          lib/cmake/wrpn/wrpnConfig.cmake lib/cmake/wrpn/wrpnConfigVersion.cmake)
  if(NOT EXISTS ${WORK_DIR}/prefix/${f})
    message(FATAL_ERROR "installed tree lacks ${f}")
  endif()
endforeach()
set(cuda_args "")
if(CUDA_COMPILER)
  set(cuda_args -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER} -DTORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST})
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/build
                  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
                  -DTorch_DIR=${TORCH_DIR}
                  ${cuda_args}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed (${rc})")
endif()
execute_process(COMMAND ${WORK_DIR}/build/consumer ${DIGITS_ROOT} ${WORK_DIR} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the consumer failed (${rc})")
endif()
