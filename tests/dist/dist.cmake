# Expert parallelism across MPI ranks on one machine (OpenMPI's mpirun, as root with its
# run-as-root settings): the expert-parallel dispatcher against one process on the whole batch.
if(TARGET switchyard_mpi)
  find_program(SWITCHYARD_MPIEXEC NAMES mpirun mpiexec)
  add_executable(test_expert_parallel ${CMAKE_CURRENT_LIST_DIR}/test_expert_parallel.cpp)
  target_link_libraries(test_expert_parallel PRIVATE switchyard_mpi)
  target_include_directories(test_expert_parallel PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(test_expert_parallel PRIVATE ${SWITCHYARD_WARNINGS})
  foreach(ranks IN ITEMS 2 4)
    add_test(NAME expert_parallel_np${ranks}
      COMMAND ${SWITCHYARD_MPIEXEC} --oversubscribe -np ${ranks} $<TARGET_FILE:test_expert_parallel>)
    # Label mpi: the ASan stage of scripts/test.sh leaves these out (OpenMPI's own allocations
    # at MPI_Init read as leaks there); release and debug run them.
    set_tests_properties(expert_parallel_np${ranks} PROPERTIES TIMEOUT 120 LABELS mpi
      ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=1")
  endforeach()
  # Training across ranks against one process: every router family, resume with another rank
  # count, a rank that dies or hangs, layout errors (tests/dist/train_parallel_test.py).
  add_test(NAME train_parallel
    COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/train_parallel_test.py
            $<TARGET_FILE:switchyard_cli> ${SWITCHYARD_MPIEXEC})
  set_tests_properties(train_parallel PROPERTIES TIMEOUT 600 LABELS mpi)
endif()
