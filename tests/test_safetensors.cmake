# Safetensors reader/writer and atomic file helper tests; include()d from tests/CMakeLists.txt.
add_executable(test_safetensors test_safetensors.cpp)
target_link_libraries(test_safetensors PRIVATE switchyard GTest::gtest_main GTest::gmock)
target_compile_options(test_safetensors PRIVATE ${SWITCHYARD_WARNINGS})
gtest_discover_tests(test_safetensors)
