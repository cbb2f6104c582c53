# SPDX-License-Identifier: GPL-2.0
#
# tballoon top-level Makefile.
#
#   make              build the guest module and the host tool
#   make module       virtio_tballoon.ko against KDIR (Debian's linux-headers-amd64);
#                     with MODOUT=DIR, built in a copy of the sources in DIR
#                     (one output per kernel: MODOUT=out/module-$KVER)
#   make host-tool    host-tool/tballoon
#   make check        every test lane (same as scripts/check)
#   make demo         boot a guest, timed inflate and deflate (same as scripts/demo)
#   make sparse       the module under sparse (C=2)
#   make bench        tballoon vs upstream balloon vs virtio-mem vs the allocator
#                     (bench/run.py: table, out/bench/results.json, balloon.png)
#   make bench-enforce  guest- against host-enforced timed commands (bench/enforce.py)
#   make bench-migrate  live migration with and without a timed shrink (bench/migrate.py)
#   make bench-reporting  free page reporting, ours against virtio_balloon (bench/reporting.py)
#   make bench-punch  the daemon's punching in the loop against its punch threads (bench/punch.py)
#   make bench-policy host memory policies on three guests and one trace: static,
#                     oVirt MOM's rules, free page reporting, tballoon balance (bench/policy.py)
#   make dkms-install install the module with DKMS for KVER (default: the
#                     linux-headers-amd64 kernel; several: KVER="V1 V2"):
#                     sources to /usr/src/tballoon-<version>/, dkms add,
#                     then dkms build and install for each kernel
#   make dkms-remove  dkms remove --all and delete /usr/src/tballoon-<version>/
#   make install      the host side: tballoon, its man page and the systemd
#                     units under $(DESTDIR)$(PREFIX) (PREFIX=/usr/local);
#                     make uninstall removes exactly those files
#
# The kernel build itself reads ./Kbuild; this file only drives it.

KVER ?= $(shell dpkg-query -W -f='$${Depends}' linux-headers-amd64 2>/dev/null | \
	  sed -nE 's/.*linux-headers-([0-9][^ ,]*-amd64).*/\1/p')
KDIR ?= /lib/modules/$(KVER)/build

# What the module is built from (also what DKMS gets).
MODULE_SRCS := Kbuild Kconfig $(wildcard driver/*.[ch]) $(wildcard proto/*.h)
DKMS_VERSION := $(shell sed -nE 's/^PACKAGE_VERSION="?([^"]*)"?/\1/p' dkms.conf)
DKMS_SRC := /usr/src/tballoon-$(DKMS_VERSION)

.PHONY: all module host-tool check demo bench bench-enforce bench-migrate bench-reporting bench-punch bench-policy bench-skipzero sparse clean dkms-install dkms-remove \
	install uninstall

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
# systemd reads /usr/local/lib/systemd/system as well as /lib/systemd/system
UNITDIR ?= $(PREFIX)/lib/systemd/system
UNITS := tballoon-serve@.service tballoon-serve@.socket
# Debian's python3 reads /usr/local/lib/python3/dist-packages
PYDIR ?= $(PREFIX)/lib/python3/dist-packages
INSTALLED := $(DESTDIR)$(BINDIR)/tballoon $(DESTDIR)$(MANDIR)/man8/tballoon.8 \
	$(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) $(DESTDIR)$(PYDIR)/tballoon.py

all: module host-tool

ifeq ($(MODOUT),)
module:
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules
else
# Kbuild writes its objects next to the sources: a copy per kernel keeps the
# builds apart (cp -p keeps the times, so rebuilds stay incremental).
module:
	mkdir -p $(MODOUT)
	cp -p --parents $(MODULE_SRCS) $(MODOUT)/
	$(MAKE) -C $(KDIR) M=$(abspath $(MODOUT)) modules
endif

sparse:
	$(MAKE) -C $(KDIR) M=$(CURDIR) C=2 modules

host-tool:
	$(MAKE) -C host-tool

check:
	scripts/check

dkms-install: dkms-remove
	mkdir -p $(DKMS_SRC)
	cp --parents dkms.conf $(MODULE_SRCS) $(DKMS_SRC)/
	dkms add -m tballoon -v $(DKMS_VERSION)
	for k in $(KVER); do \
		dkms build -m tballoon -v $(DKMS_VERSION) -k $$k && \
		dkms install -m tballoon -v $(DKMS_VERSION) -k $$k || exit 1; \
	done

dkms-remove:
	if dkms status -m tballoon -v $(DKMS_VERSION) | grep -q .; then \
		dkms remove -m tballoon -v $(DKMS_VERSION) --all; fi
	rm -rf $(DKMS_SRC)

demo:
	scripts/demo

install: host-tool
	install -D -m 0755 host-tool/tballoon $(DESTDIR)$(BINDIR)/tballoon
	install -D -m 0644 host-tool/tballoon.8 $(DESTDIR)$(MANDIR)/man8/tballoon.8
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' host-tool/systemd/tballoon-serve@.service.in \
		>$(DESTDIR)$(UNITDIR)/tballoon-serve@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/tballoon-serve@.service
	install -m 0644 host-tool/systemd/tballoon-serve@.socket $(DESTDIR)$(UNITDIR)/
	install -D -m 0644 host-tool/python/tballoon.py $(DESTDIR)$(PYDIR)/tballoon.py

uninstall:
	rm -f $(INSTALLED)

# BENCH_RAM=thp: every guest's RAM in host 2 MiB transparent huge pages
BENCH_RAM ?= memfd
bench: module host-tool
	/usr/bin/python3 bench/run.py --ram $(BENCH_RAM)

bench-enforce: module host-tool
	/usr/bin/python3 bench/enforce.py

bench-migrate: module host-tool
	/usr/bin/python3 bench/migrate.py

bench-reporting: module host-tool
	/usr/bin/python3 bench/reporting.py

bench-punch: module host-tool
	/usr/bin/python3 bench/punch.py

bench-policy: module host-tool
	/usr/bin/python3 bench/policy.py

# (a) with and without zeroing, and (d), on a kernel carrying driver/patches/ (built on
# first use by scripts/setup --bench-kernel, 10-20 min), against (b)
# (SKIPZERO_KERNEL=skipzero-6.12: the 6.12 one, scripts/setup --bench-kernel-6.12)
SKIPZERO_KERNEL ?= skipzero
bench-skipzero: host-tool
	TB_KERNEL=$(SKIPZERO_KERNEL) /usr/bin/python3 bench/run.py --only a,z,b,d --scale-reps 0 \
		--no-profile --ram $(BENCH_RAM) --out out/bench-$(SKIPZERO_KERNEL)-$(BENCH_RAM)

clean:
	-$(MAKE) -C $(KDIR) M=$(CURDIR) clean
	-$(MAKE) -C host-tool clean
	rm -rf out
