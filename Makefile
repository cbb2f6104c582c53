# SPDX-License-Identifier: GPL-2.0
#
# tballoon top-level Makefile.
#
#   make              build the guest module and the host tool
#   make module       virtio_tballoon.ko against KDIR (Debian's linux-headers-amd64)
#   make host-tool    host-tool/tballoon
#   make check        every test lane (same as scripts/check)
#   make demo         boot a guest, timed inflate and deflate (same as scripts/demo)
#   make sparse       the module under sparse (C=2)
#
# The kernel build itself reads ./Kbuild; this file only drives it.

KVER ?= $(shell dpkg-query -W -f='$${Depends}' linux-headers-amd64 2>/dev/null | \
	  sed -nE 's/.*linux-headers-([0-9][^ ,]*-amd64).*/\1/p')
KDIR ?= /lib/modules/$(KVER)/build

.PHONY: all module host-tool check demo sparse clean

all: module host-tool

module:
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules

sparse:
	$(MAKE) -C $(KDIR) M=$(CURDIR) C=2 modules

host-tool:
	$(MAKE) -C host-tool

check:
	scripts/check

demo:
	scripts/demo

clean:
	-$(MAKE) -C $(KDIR) M=$(CURDIR) clean
	-$(MAKE) -C host-tool clean
	rm -rf out
