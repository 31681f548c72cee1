# The MoE layer's seams (dispatcher, expert backend, per-expert weights).
add_executable(test_layer_seams ${CMAKE_CURRENT_LIST_DIR}/test_layer_seams.cpp)
target_link_libraries(test_layer_seams PRIVATE switchyard GTest::gtest_main GTest::gmock)
target_compile_options(test_layer_seams PRIVATE ${SWITCHYARD_WARNINGS})
target_include_directories(test_layer_seams PRIVATE ${PROJECT_SOURCE_DIR}/src)
gtest_discover_tests(test_layer_seams)
