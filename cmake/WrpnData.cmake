# Dependencies of wrpn::data: zlib (reads digits.csv.gz) and, optionally, libjpeg-turbo and libpng
# (decode image folders). Without the codecs the library builds; the folder dataset and the image
# functions then throw an error that says so.
set(WRPN_WITH_IMAGE_CODECS "AUTO" CACHE STRING
    "JPEG/PNG support in wrpn::data (libjpeg-turbo, libpng): AUTO (when found), ON or OFF")
set_property(CACHE WRPN_WITH_IMAGE_CODECS PROPERTY STRINGS AUTO ON OFF)

# wrpn_link_data_deps(<target>): links zlib and, when enabled and found, the image codecs.
function(wrpn_link_data_deps target)
  find_package(ZLIB REQUIRED)
  target_link_libraries(${target} PRIVATE ZLIB::ZLIB)
  set(codecs OFF)
  if(NOT WRPN_WITH_IMAGE_CODECS STREQUAL "OFF")
    find_package(JPEG)
    find_package(PNG)
    if(JPEG_FOUND AND PNG_FOUND)
      set(codecs ON)
    elseif(WRPN_WITH_IMAGE_CODECS STREQUAL "ON")
      message(FATAL_ERROR "WRPN_WITH_IMAGE_CODECS=ON but libjpeg or libpng was not found "
                          "(Debian: apt-get install libjpeg-dev libpng-dev)")
    endif()
  endif()
  if(codecs)
    target_link_libraries(${target} PRIVATE JPEG::JPEG PNG::PNG)
    target_compile_definitions(${target} PRIVATE WRPN_HAVE_IMAGE_CODECS=1)
    message(STATUS "wrpn::data: JPEG ${JPEG_VERSION} and PNG ${PNG_VERSION_STRING} support on")
  else()
    message(STATUS "wrpn::data: JPEG/PNG support off (image folders unavailable)")
  endif()
endfunction()
