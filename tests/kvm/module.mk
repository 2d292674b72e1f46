# Check programs that need a working /dev/kvm (tests/kvm/kvm_*.c): built
# with everything else, run by the integration scripts that name them
# ("# kvm: all"), so that without /dev/kvm they run in the nested L1.
KVM_TEST_SRCS := $(wildcard tests/kvm/kvm_*.c)
KVM_TEST_BINS := $(patsubst tests/kvm/%.c,$(BUILD)/tests/%,$(KVM_TEST_SRCS))

all: $(KVM_TEST_BINS)

$(BUILD)/tests/kvm_%: tests/kvm/kvm_%.c $(BUILD)/libamalgam.a | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libamalgam.a $(CHECK_LIBS) $(LDLIBS)
