# `make fuzz`: every tests/fuzz/fuzz_*.c as a libFuzzer target (clang,
# AddressSanitizer), each run for FUZZ_SECONDS (default 60). Not part of
# `make test`. Crashes are written to build/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_LIB_SRCS := $(LIB_SRCS) $(PROTO_C)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRCS) | $(PROTO_H)
	@mkdir -p $(dir $@)
	clang -std=gnu11 -g -O1 -D_GNU_SOURCE -I. -I$(BUILD)/gen -fsanitize=fuzzer,address \
		-o $@ $< $(FUZZ_LIB_SRCS) $(LDLIBS)

fuzz: deps $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do \
		echo "fuzzing $$(basename $$f) for $(FUZZ_SECONDS) s"; \
		mkdir -p $(BUILD)/fuzz/corpus-$$(basename $$f); \
		(cd $(BUILD)/fuzz && ./$$(basename $$f) -max_total_time=$(FUZZ_SECONDS) \
			-rss_limit_mb=4096 corpus-$$(basename $$f)) 2>&1 | tail -n 3 || exit 1; \
	done
