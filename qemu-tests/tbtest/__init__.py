# SPDX-License-Identifier: GPL-2.0
"""tballoon boot-test harness: initramfs, QEMU + backend launcher, guest agent."""
