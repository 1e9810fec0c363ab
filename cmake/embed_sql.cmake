# Migrations are compiled into the daemon so that a binary is self-contained
# (no install path to get wrong, same behaviour in docker and on a host).
# m2m_embed_sql(<target> <symbol> <dir>) generates a C file holding
#   const m2m_migration <symbol>[]; const size_t <symbol>_count;
# from <dir>/NNN_name.sql, in file-name order.
function(m2m_embed_sql target symbol dir)
  file(GLOB sql_files CONFIGURE_DEPENDS ${dir}/[0-9][0-9][0-9]_*.sql)
  list(SORT sql_files)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${symbol}.c)
  # a CMake list would be split into several arguments: pass it '|'-joined
  string(REPLACE ";" "|" files_arg "${sql_files}")
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DSYMBOL=${symbol} "-DFILES=${files_arg}"
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_sql_gen.cmake
    DEPENDS ${sql_files} ${CMAKE_SOURCE_DIR}/cmake/embed_sql_gen.cmake
    COMMENT "Embedding migrations for ${target}"
    VERBATIM)
  target_sources(${target} PRIVATE ${out})
endfunction()
