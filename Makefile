# amalgam: one virtual NUMA machine over many Linux hosts.
#
# Every module directory's *.c goes into build/libamalgam.a; cli/main.c is
# the `amalgam` program. Sources are found by wildcard so that adding a file
# to a module needs no edit here. Special rules live in <dir>/module.mk.

CC      ?= gcc
BUILD   := build
PKGS    := libfabric libprotobuf-c libcrypto liblzma zlib libzstd liblz4 jansson liburing
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -I. -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP
LDLIBS  += $(PKG_LIBS) -lpthread -lm
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)

MODULES := clock platform virtio vmm interconnect dsm numa migration monitor tools cli
PROTOS  := $(wildcard proto/*.proto)
PROTO_C := $(patsubst proto/%.proto,$(BUILD)/gen/proto/%.pb-c.c,$(PROTOS))
PROTO_H := $(PROTO_C:.c=.h)
LIB_SRCS := $(filter-out cli/main.c,$(foreach m,$(MODULES),$(wildcard $(m)/*.c)))
LIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRCS)) $(patsubst %.c,%.o,$(PROTO_C))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))

.PHONY: all deps demo test unit integration test-long test-fresh fuzz clean
.SECONDARY: $(PROTO_C) $(PROTO_H)
all: $(BUILD)/amalgam $(UNIT_BINS)

# Installs the Debian packages amalgam needs (apt-get; root or sudo).
deps:
	@scripts/install-deps.sh

$(BUILD)/gen/proto/%.pb-c.c $(BUILD)/gen/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen/proto
	protoc-c --c_out=$(BUILD)/gen $<

$(BUILD)/gen/proto/%.pb-c.o: $(BUILD)/gen/proto/%.pb-c.c
	$(CC) $(filter-out -Werror,$(CFLAGS)) -c -o $@ $<

# Generated headers must exist before any module source is compiled.
$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libamalgam.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/amalgam: $(BUILD)/obj/cli/main.o $(BUILD)/libamalgam.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libamalgam.a | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libamalgam.a $(CHECK_LIBS) $(LDLIBS)

-include $(wildcard */module.mk tests/*/module.mk)

# deps first, then a fresh make: this one read pkg-config's answers (and
# the generated headers' list) before deps had installed anything, so on a
# new machine its link line would lack the libraries.
demo: deps
	@$(MAKE) --no-print-directory all
	scripts/demo.sh

unit: $(UNIT_BINS)
	@scripts/run-tests.sh unit $(UNIT_BINS)

# The whole suite: unit tests, then the integration tests that run real
# guests, processes and endpoints. Prints one "N passed, N failed" line.
test: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-tests.sh all

test-long: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-tests.sh long

# The install path as a newcomer meets it: .ci/run inside a new Debian 12
# tree (debootstrap --variant=buildd: a compiler and make, nothing else).
test-fresh: deps
	@scripts/test-fresh.sh

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
