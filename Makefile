# redvoy — two commands on a fresh Debian machine: `make demo`, `make test`.
# The shell logic lives in scripts/ (each installs what it needs and stops what it starts).

.PHONY: demo test bench profile fuzz soak lint fmt

## demo: three local redis-servers behind redvoy, a few redis-cli commands, keys and stats;
## then a live config push through redvoy-control-plane (the prefix-sharding scenario)
demo:
	bash scripts/demo.sh

## demo-<scenario>: istio-examples/<scenario> on this machine (redis-cluster, read-replica,
## mirroring, prefix-sharding, write-mirroring): real redis-servers, redvoy-control-plane on the
## scenario's YAML, redvoy as the sidecar, a live edit of the EnvoyFilter (DEMO_TARGET=envoy)
demo-%:
	bash scripts/demo_scenario.sh $*

## test: installs redis and Envoy 1.40 if missing, then runs every test (Envoy is the oracle)
test:
	bash scripts/test.sh

## bench: redis-benchmark against direct Redis, twemproxy, Envoy 1.40 and redvoy, interleaved
bench:
	bash scripts/bench.sh

## profile: perf samples of redvoy under redis-benchmark (3 shards): top frames, flame graph,
## syscalls per request, in bench/.profile/ (PROFILE_TEST, PROFILE_PIPELINE: scripts/profile.sh)
profile:
	bash scripts/profile.sh

## fuzz: coverage-guided fuzzing (libFuzzer, stable toolchain) of the RESP decoder, the RESP3
## converter, xDS resources, the bootstrap (YAML and proto) and the splitter and router,
## FUZZ_SECONDS per target (scripts/fuzz.sh)
fuzz:
	bash scripts/fuzz.sh

## soak: 30 minutes of redis-benchmark, redis-py and ioredis through redvoy while its control
## plane pushes a change every second and a redis-server is killed every 3 minutes; reports
## errors by kind, memory and descriptors over time (SOAK_SECONDS and more: scripts/soak.sh)
soak:
	bash scripts/soak.sh

## lint: formatting and clippy, warnings as errors
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p redvoy-proxy --features fuzzing --all-targets -- -D warnings
	cargo clippy -p redvoy --features kube --bin redvoy-control-plane -- -D warnings

fmt:
	cargo fmt --all
