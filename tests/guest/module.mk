# The freestanding SMP test guest: a 64-bit ELF identity-linked at 1 MiB.
# No SSE anywhere: its kernel-mode code runs in KVM's emulator on hosts
# without VT-x/AMD-V, and that emulator refuses some SSE instructions.
GUEST_SRCS := $(wildcard tests/guest/*.c) $(wildcard tests/guest/*.S)
GUEST_OBJS := $(patsubst tests/guest/%,$(BUILD)/guest/%.o,$(GUEST_SRCS))
GUEST_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -ffreestanding -fno-pic -fno-pie \
	-mno-red-zone -mgeneral-regs-only -mno-sse -mno-mmx -mno-80387 -fno-stack-protector \
	-fno-builtin -nostdlib -mcmodel=small -fcf-protection=none -Itests/guest

$(BUILD)/guest/%.c.o: tests/guest/%.c tests/guest/guest.h
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -c -o $@ $<

$(BUILD)/guest/%.S.o: tests/guest/%.S tests/guest/guest.h
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -D__ASSEMBLY__ -c -o $@ $<

$(BUILD)/guest/testguest.elf: $(GUEST_OBJS) tests/guest/link.ld
	ld -nostdlib -static -no-pie -z max-page-size=4096 -z noexecstack --no-warn-rwx-segments -T tests/guest/link.ld -o $@ $(GUEST_OBJS)

all: $(BUILD)/guest/testguest.elf
