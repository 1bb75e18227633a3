# Packaging.cmake: the Debian package, built by `cpack -G DEB` in a build tree.
#
# One package, "cairn", holds the three programs, the example configs (as
# conffiles), the systemd units and the man pages (see deploy/CMakeLists.txt).
# deploy/debian/ holds its maintainer scripts: postinst creates the system
# user, /etc/cairn and missing CURVE keys and starts both services; see
# cairn-aggregator(8), section PACKAGE, for what an install does.
#
# The package installs under /usr whatever CMAKE_INSTALL_PREFIX the tree was
# configured with: the units name their paths at install time.

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cairn)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "cairn")
set(CPACK_PACKAGE_CONTACT "cairn maintainers <maintainers@cairn.invalid>" CACHE STRING
    "Maintainer field of the Debian package")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "self-hosted AWS CloudTrail: regional agents and a central aggregator")
set(CPACK_PACKAGE_DESCRIPTION
    "cairn records every API call made across many regions and keeps one\n\
consolidated trail of them, as AWS CloudTrail does for AWS.\n\
cairn-agent captures CloudTrail-shaped JSON events in each region, keeps them\n\
in a durable LMDB spool and ships them over CURVE-secured ZeroMQ;\n\
cairn-aggregator stores each event once and delivers gzip'd CloudTrail log\n\
files to a directory or an S3 bucket every five minutes. cairn makes keys.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # cairn_VERSION-RELEASE_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Library dependencies come from dpkg-shlibdeps (package dpkg-dev); the
# maintainer scripts need adduser.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${PROJECT_SOURCE_DIR}/deploy/debian/conffiles"
    "${PROJECT_SOURCE_DIR}/deploy/debian/postinst"
    "${PROJECT_SOURCE_DIR}/deploy/debian/prerm"
    "${PROJECT_SOURCE_DIR}/deploy/debian/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON) # scripts 0755, conffiles 0644

include(CPack)
