# install-units.cmake: runs inside `cmake --install` (see deploy/CMakeLists.txt)
# with CMAKE_INSTALL_PREFIX set to the prefix being installed to. Installs
# the example configs and the systemd units filled in for that prefix.
#
# In: CAIRN_DEPLOY_DIR, CAIRN_WORK_DIR, CAIRN_BINDIR, CAIRN_SYSCONFDIR and
# CAIRN_UNITDIR (the last three relative to the prefix unless absolute).

# Absolute directories for this prefix, by GNUInstallDirs' rules.
function(s_absolute out dir)
    if(IS_ABSOLUTE "${dir}")
        set(${out} "${dir}" PARENT_SCOPE)
    else()
        set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
    endif()
endfunction()
s_absolute(bindir "${CAIRN_BINDIR}")
s_absolute(unitdir "${CAIRN_UNITDIR}")
if(IS_ABSOLUTE "${CAIRN_SYSCONFDIR}")
    set(sysconfdir "${CAIRN_SYSCONFDIR}")
elseif(CMAKE_INSTALL_PREFIX MATCHES "^/(usr/?)?$")
    set(sysconfdir "/${CAIRN_SYSCONFDIR}")
elseif(CMAKE_INSTALL_PREFIX MATCHES "^/opt/")
    set(sysconfdir "/${CAIRN_SYSCONFDIR}${CMAKE_INSTALL_PREFIX}")
else()
    set(sysconfdir "${CMAKE_INSTALL_PREFIX}/${CAIRN_SYSCONFDIR}")
endif()
set(confdir "${sysconfdir}/cairn")

# Example configs: an admin's edited copy is kept.
foreach(conf cairn-agent.conf cairn-aggregator.conf)
    if(EXISTS "$ENV{DESTDIR}${confdir}/${conf}")
        message(STATUS "Keeping existing: $ENV{DESTDIR}${confdir}/${conf}")
    else()
        file(INSTALL DESTINATION "${confdir}" TYPE FILE
             PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
             FILES "${CAIRN_DEPLOY_DIR}/${conf}")
    endif()
endforeach()

# Units: @BINDIR@ and @CONFDIR@ filled in.
set(BINDIR "${bindir}")
set(CONFDIR "${confdir}")
foreach(unit cairn-agent.service cairn-aggregator.service)
    configure_file("${CAIRN_DEPLOY_DIR}/${unit}.in" "${CAIRN_WORK_DIR}/${unit}" @ONLY)
    file(INSTALL DESTINATION "${unitdir}" TYPE FILE
         PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
         FILES "${CAIRN_WORK_DIR}/${unit}")
endforeach()
