# jetdeploy: every target does its own set-up (the venv is built on first use).
# `make help` lists the targets.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
JD          := $(BIN)/jetdeploy
STAMP       := $(VENV)/.installed
# pinned: a local CPU build of torch (an unpinned torch pulls gigabytes of CUDA), and the
# pythia8mc release that has a wheel (8.318.0 compiles from source for half an hour)
TORCH       ?= torch==2.13.0
PYTHIA      ?= pythia8mc==8.317.2
# the [keras] extra (TensorFlow CPU, Keras 3, HGQ2: the Keras front door and `make crosscheck`); EXTRAS= leaves it
# out, and the Keras tests are then skipped with their reason
EXTRAS      ?= ,keras

DATA_PRESET ?= default
SEED        ?=
WORKERS     ?= $(shell nproc 2>/dev/null || echo 2)
DATA_FILE   := data/$(DATA_PRESET).h5
# training: a float run, then QAT fine-tuned from it (the preset's quant.scheme), both evaluated on 'test'
TRAIN_PRESET ?= default
RUN_DIR     ?= runs/demo
FLOAT_RUN   := $(RUN_DIR)/$(TRAIN_PRESET)-float
QAT_RUN     := $(RUN_DIR)/$(TRAIN_PRESET)-qat
INT8_RUN    := $(RUN_DIR)/$(TRAIN_PRESET)-int8
# int8 QAT: 7-bit weights and attention keys / values in int8 storage, so that ONNX Runtime's u8 x s8 integer
# kernels cannot saturate on x86 CPUs without VNNI (AVX2: pairs of products are summed in 16 bits)
INT8_SET    := --set quant.scheme=int8 --set quant.weight_bits=7 --set quant.act_bits=8 --set quant.bias_bits=32 \
               --set "quant.overrides={'*.k_quant': 7, '*.v_quant': 7}" --set quant.act_rounding=round
TRAIN_ARGS  ?=
# each preset's QAT fine-tuning (the float run uses the preset's train section)
QAT_ARGS_fpga16n := --set train.epochs=12 --set train.lr=0.001
# fpga32n is the N=32 study's reference (its input bits and the transformer's shape): 4 epochs, about 4 min each
QAT_ARGS_fpga32n := --set train.epochs=4 --set train.lr=0.001
QAT_ARGS    ?= $(QAT_ARGS_$(TRAIN_PRESET))

# edge: a float run of EDGE_PRESET (pruned by Zero-TPrune / LTP) and its INT8 QAT twin
EDGE_PRESET ?= edge32
EDGE_FLOAT  := $(RUN_DIR)/$(EDGE_PRESET)-float
EDGE_INT8   := $(RUN_DIR)/$(EDGE_PRESET)-int8
EDGE_ARGS   ?=
# each edge preset's LTP operating point. edge64: one deep step after block 0 (keep the 16 particles that receive the
# most attention), 8 distilled epochs at lr 5e-4; chosen on the whole val split (README, edge: runs 6 and 7, Intel
# Xeon, 12-epoch float run on data/full.h5: -0.50 test points, x2.25-2.29 bucketed and x1.74-1.82 batch-1 warm over
# the padding-free graph)
LTP_ARGS_edge64 := --at 0 --budget 0.25,0.25,0.25,0.25 --soft-epochs 0 --hard-epochs 8 --distill 0.9 --pool entry --lr 5e-4
# the demo's edge32: one deep step after block 0 (keep the 8 particles that receive the most attention), 12 epochs
# of distilled fine-tuning at half the float run's learning rate (fresh-clone demo, Intel Xeon: -0.27 test points,
# x1.85-1.87 bucketed and x1.28-1.31 batch-1 warm over the padding-free graph; README, edge)
LTP_ARGS_edge32 := --at 0 --budget 0.25,0.25,0.25 --soft-epochs 0 --hard-epochs 12 --distill 0.9 --pool entry --lr 1e-3
LTP_ARGS    ?= $(LTP_ARGS_$(EDGE_PRESET))
# a preset's second, deeper operating point for pruning + INT8, trained beside the first (edge ltp --out
# RUN/edge/deep; ltp@deep in the bench). edge64: 16 particles after block 0, then 8 after block 1 (README, edge:
# runs 8 and 9)
LTP2_ARGS_edge64 := --at 0,1 --budget 0.25,0.125,0.125,0.125 --soft-epochs 0 --hard-epochs 8 --distill 0.9 --pool entry --lr 5e-4
LTP2_ARGS   ?= $(LTP2_ARGS_$(EDGE_PRESET))
LTP2        := $(if $(strip $(LTP2_ARGS)),$(EDGE_FLOAT)/edge/deep/ltp.pt)
# torch threads of each `edge ltp` (empty: all cores); THREADS=1 when several jobs share a small machine
THREADS     ?=
LTP_THREADS := $(if $(THREADS),--threads $(THREADS))

.PHONY: help install crosscheck hgq study study-full rtl-tools data train evaluate baselines export rtl rtl-baseline hls csim synth sweep report report-tools edge bench bench-part bench-train bench-onnx demo test clean clean-data
# generated samples are never deleted as 'intermediate' files
.PRECIOUS: data/%.h5 $(RUN_DIR)/%/model.pt $(RUN_DIR)/%/metrics.json

help:
	@echo "make demo     run the pipeline on the embedded default sample (grows stage by stage)"
	@echo "make test     run the test suite"
	@echo "make install  create $(VENV) and install jetdeploy with pinned torch / pythia8mc"
	@echo "make data     generate data/\$$(DATA_PRESET).h5 (tiny|default|full; cached) + histograms"
	@echo "              variables: DATA_PRESET=$(DATA_PRESET) SEED=<preset's> WORKERS=$(WORKERS)"
	@echo "make train    float + QAT runs of configs/\$$(TRAIN_PRESET).yaml on \$$(DATA_FILE) under \$$(RUN_DIR)"
	@echo "              variables: TRAIN_PRESET=$(TRAIN_PRESET) RUN_DIR=$(RUN_DIR) TRAIN_ARGS= QAT_ARGS= (extra jetdeploy train flags)"
	@echo "make evaluate metrics.json + ROC of both runs on the held-out 'test' split"
	@echo "make baselines Deep Sets and observable-MLP at the same N, and a comparison table + ROC ($(RUN_DIR)/compare)"
	@echo "make export   ONNX (float run + ORT INT8), QONNX (fpga run), QCDQ (int8 run), verified -> RUN/export/verify.json"
	@echo "make hls      fpga run -> hls4ml Vitis HLS project (types from the Quant nodes) -> \$$(QAT_RUN)/fpga/hls/"
	@echo "make csim     hls4ml g++ C-simulation vs qonnx on 1000 held-out jets -> \$$(QAT_RUN)/fpga/csim.json"
	@echo "make synth    Vitis HLS C synthesis + report (needs vitis-run) -> \$$(QAT_RUN)/fpga/synth.json"
	@echo "make study    Level-1 architectures (Deep Sets, JEDI-linear-style, MLP-Mixer, transformer) from scratch with"
	@echo "              HGQ2, each to Verilator + Yosys, one table + Pareto plot ($(STUDY) -> OUT)"
	@echo "make study-full  the same on data/full.h5 at N=16 and N=32 (configs/study-full.yaml, references"
	@echo "              built first, designs on a 2-process Dask LocalCluster; hours on 2 cores, resumable) -> runs/study-full/"
	@echo "make sweep    FPGA design points of \$$(SWEEP) over Dask -> runs/sweep/{sweep.json,sweep.md,pareto.png}"
	@echo "make report   RUN_DIR/report/: report.json, report.md, index.html + PNGs over every run in RUN_DIR"
	@echo "make rtl      fpga run -> da4ml Verilog: interpreter vs qonnx, iverilog-measured latency at II=1"
	@echo "              (-> \$$(QAT_RUN)/fpga/rtl.json; RTL_ARGS=--synth adds Yosys LUT/FF/DSP, slow on full models)"
	@echo "make rtl-baseline  the same for the Deep Sets baseline's QAT twin (-> \$$(RUN_DIR)/\$$(TRAIN_PRESET)-deepsets-qat)"
	@echo "              full-size figures: make rtl rtl-baseline TRAIN_PRESET=fpga16 DATA_PRESET=full RTL_ARGS='--no-sim --synth'"
	@echo "make crosscheck  Keras/HGQ2 twin of the fpga run through hls4ml's upstream attention path and da4ml's HGQ2"
	@echo "              tracer, side by side with our QONNX path (-> \$$(QAT_RUN)/fpga/crosscheck.json, crosscheck.md)"
	@echo "make hgq      HGQ2 fine-tuning of that twin (bit width per weight/activation), then its RTL via --keras"
	@echo "              (-> \$$(QAT_RUN)/fpga/hgq/{model.keras,hgq.json,rtl.json}; HGQ_ARGS= e.g. --epochs --beta)"
	@echo "make edge     float run of configs/\$$(EDGE_PRESET).yaml + Learned Token Pruning (-> \$$(RUN_DIR)/\$$(EDGE_PRESET)-float/edge/ltp.pt)"
	@echo "              variables: EDGE_PRESET=$(EDGE_PRESET) LTP_ARGS= (extra jetdeploy edge ltp flags) THREADS= (torch threads)"
	@echo "              LTP2_ARGS= a second, deeper operating point (-> .../edge/deep/ltp.pt; set for edge64)"
	@echo "make bench    edge benchmark: unpruned / Zero-TPrune / LTP / random control, float and INT8 (+ the INT8 QAT"
	@echo "              twin's QCDQ), on ORT (-> .../edge/bench.json, bench.md, pareto.png; EDGE_ARGS= extra flags)"
	@echo "make bench-part   a ParT-style model (\$$(PART_PRESET), pair bias from p4) trained, LTP-pruned and benched beside"
	@echo "              \$$(EDGE_PRESET) in one loop (-> \$$(EDGE_FLOAT)/edge/bench.json; EDGE_PRESET=edge64 PART_PRESET=edge64p)"
	@echo "make bench-onnx   ORT speed of the TorchScript vs dynamo float export (-> runs/bench/onnx.json)"
	@echo "make bench-train  training jets/s per preset, float vs QAT, on this machine (-> runs/bench/train.json)"
	@echo "make clean    remove the venv; make clean-data removes data/"

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q "$(PYTHIA)" -e ".[test,root,dask$(EXTRAS)]"
	touch $@

# Regenerated only when the preset changes (and jetdeploy itself skips a file made from the same config).
data/%.h5: configs/data/%.yaml | $(STAMP)
	$(JD) data generate --preset $* --workers $(WORKERS) --out $@ $(if $(SEED),--seed $(SEED))

# The physics checks (W/Z/top mass peaks, gluon vs quark multiplicity) need more than the tiny preset's jets.
data/%.inspect.json: data/%.h5
	$(JD) data inspect $< --plot data/$*.png --json $@ $(if $(filter tiny,$*),,--check)

data: data/$(DATA_PRESET).inspect.json

$(FLOAT_RUN)/model.pt: configs/$(TRAIN_PRESET).yaml $(DATA_FILE) | $(STAMP)
	$(JD) train --config $(TRAIN_PRESET) --data $(DATA_FILE) --run $(FLOAT_RUN) --set quant.scheme=float $(TRAIN_ARGS)

$(QAT_RUN)/model.pt: $(FLOAT_RUN)/model.pt
	$(JD) train --config $(TRAIN_PRESET) --data $(DATA_FILE) --run $(QAT_RUN) --init-from $(FLOAT_RUN) $(QAT_ARGS)

$(RUN_DIR)/%/metrics.json: $(RUN_DIR)/%/model.pt $(DATA_FILE)
	$(JD) evaluate --run $(RUN_DIR)/$* --data $(DATA_FILE)

$(INT8_RUN)/model.pt: $(FLOAT_RUN)/model.pt
	$(JD) train --config $(TRAIN_PRESET) --data $(DATA_FILE) --run $(INT8_RUN) --init-from $(FLOAT_RUN) $(INT8_SET) $(QAT_ARGS)

$(RUN_DIR)/%/export/verify.json: $(RUN_DIR)/%/model.pt $(DATA_FILE)
	$(JD) export --run $(RUN_DIR)/$* --data $(DATA_FILE)

train: $(QAT_RUN)/model.pt $(INT8_RUN)/model.pt

evaluate: $(FLOAT_RUN)/metrics.json $(QAT_RUN)/metrics.json $(INT8_RUN)/metrics.json

# float ONNX + ORT INT8 (float run), QONNX (fpga QAT run), QCDQ (int8 QAT run), each verified
export: $(FLOAT_RUN)/export/verify.json $(QAT_RUN)/export/verify.json $(INT8_RUN)/export/verify.json

BASE_DS  := $(RUN_DIR)/$(TRAIN_PRESET)-deepsets
BASE_MLP := $(RUN_DIR)/$(TRAIN_PRESET)-mlp
$(BASE_DS)/model.pt: configs/$(TRAIN_PRESET).yaml $(DATA_FILE) | $(STAMP)
	$(JD) train --config $(TRAIN_PRESET) --data $(DATA_FILE) --run $(BASE_DS) --set quant.scheme=float \
	  --set model.arch=deepsets --set model.dim=32 --set model.ffn_dim=64 $(TRAIN_ARGS)
$(BASE_MLP)/model.pt: configs/$(TRAIN_PRESET).yaml $(DATA_FILE) | $(STAMP)
	$(JD) train --config $(TRAIN_PRESET) --data $(DATA_FILE) --run $(BASE_MLP) --set quant.scheme=float \
	  --set model.arch=mlp --set model.dim=64 --set model.observables_from=leading $(TRAIN_ARGS)

baselines: evaluate $(BASE_DS)/metrics.json $(BASE_MLP)/metrics.json
	$(JD) compare $(FLOAT_RUN) $(QAT_RUN) $(INT8_RUN) $(BASE_DS) $(BASE_MLP) --out $(RUN_DIR)/compare

# open-source RTL of the fpga (QAT) run: da4ml -> Verilog -> iverilog latency (+ Yosys with RTL_ARGS=--synth)
RTL_ARGS    ?=
$(QAT_RUN)/fpga/rtl.json: $(QAT_RUN)/export/verify.json | rtl-tools
	$(JD) fpga rtl --run $(QAT_RUN) --data $(DATA_FILE) $(RTL_ARGS)

rtl: $(QAT_RUN)/fpga/rtl.json

# the Deep Sets baseline's QAT twin through the same RTL path (what attention costs on the FPGA)
BASE_DSQ := $(RUN_DIR)/$(TRAIN_PRESET)-deepsets-qat
$(BASE_DSQ)/model.pt: $(BASE_DS)/model.pt
	$(JD) train --config $(TRAIN_PRESET) --data $(DATA_FILE) --run $(BASE_DSQ) --init-from $(BASE_DS) \
	  --set model.arch=deepsets --set model.dim=32 --set model.ffn_dim=64 --set "quant.overrides={}" $(QAT_ARGS)
$(BASE_DSQ)/fpga/rtl.json: $(BASE_DSQ)/export/verify.json $(BASE_DSQ)/metrics.json | rtl-tools
	$(JD) fpga rtl --run $(BASE_DSQ) --data $(DATA_FILE) $(RTL_ARGS)

rtl-baseline: $(BASE_DSQ)/fpga/rtl.json

# the upstream cross-check: a Keras/HGQ2 twin of the fpga run -> hls4ml Keras v3 C-sim and da4ml HGQ2 tracer
CROSS_ARGS  ?=
$(QAT_RUN)/fpga/crosscheck.json: $(QAT_RUN)/export/verify.json | rtl-tools
	$(JD) fpga crosscheck --run $(QAT_RUN) --data $(DATA_FILE) $(CROSS_ARGS)

crosscheck: $(QAT_RUN)/fpga/crosscheck.json

# HGQ2 fine-tuning of the twin (a bit width per weight / activation), then its RTL through the Keras front door
# fpga16l (sigmoid attention): the smallest model of HGQ2's Pareto front within 2.2 points of validation accuracy
# (README: 245,107 Yosys LUT, 90 ns in Verilator, -1.6 test points; about 40 min of training on one core)
HGQ_ARGS_fpga16l := --epochs 48 --beta 1e-6 --lr 3e-3 --val-drop 2.2
HGQ_ARGS    ?= $(HGQ_ARGS_$(TRAIN_PRESET))
$(QAT_RUN)/fpga/hgq/hgq.json: $(QAT_RUN)/export/verify.json
	$(JD) fpga hgq --run $(QAT_RUN) --data $(DATA_FILE) $(HGQ_ARGS)

hgq: $(QAT_RUN)/fpga/hgq/hgq.json | rtl-tools
	$(JD) fpga rtl --keras $(QAT_RUN)/fpga/hgq/model.keras --inputs $(QAT_RUN)/fpga/hgq/test_inputs.npy \
	  --out $(QAT_RUN)/fpga/hgq $(RTL_ARGS)

# hls4ml of the fpga (QAT) run: Vitis HLS project, g++ C-simulation vs qonnx, vendor synthesis when installed
HLS_ARGS    ?=
$(QAT_RUN)/fpga/hls.json: $(QAT_RUN)/export/verify.json
	$(JD) fpga hls --run $(QAT_RUN) --data $(DATA_FILE) $(HLS_ARGS)

$(QAT_RUN)/fpga/csim.json: $(QAT_RUN)/export/verify.json
	$(JD) fpga csim --run $(QAT_RUN) --data $(DATA_FILE) $(HLS_ARGS)

hls: $(QAT_RUN)/fpga/hls.json

csim: $(QAT_RUN)/fpga/csim.json

# needs Vitis HLS (vitis-run on PATH or JETDEPLOY_VITIS=/path/to/Vitis/<version>); fails with that message otherwise
synth: $(QAT_RUN)/fpga/hls.json
	$(JD) fpga synth --run $(QAT_RUN) --data $(DATA_FILE) $(HLS_ARGS)

# edge: LTP thresholds for the edge float run, then every pruning / INT8 variant side by side on ORT
ifneq ($(EDGE_PRESET),$(TRAIN_PRESET))
$(EDGE_FLOAT)/model.pt: configs/$(EDGE_PRESET).yaml $(DATA_FILE) | $(STAMP)
	$(JD) train --config $(EDGE_PRESET) --data $(DATA_FILE) --run $(EDGE_FLOAT) --set quant.scheme=float $(TRAIN_ARGS)

$(EDGE_INT8)/model.pt: $(EDGE_FLOAT)/model.pt
	$(JD) train --config $(EDGE_PRESET) --data $(DATA_FILE) --run $(EDGE_INT8) --init-from $(EDGE_FLOAT) $(INT8_SET) $(QAT_ARGS)
endif

$(EDGE_FLOAT)/edge/ltp.pt: $(EDGE_FLOAT)/model.pt $(DATA_FILE)
	$(JD) edge ltp --run $(EDGE_FLOAT) --data $(DATA_FILE) $(LTP_ARGS) $(LTP_THREADS)

$(EDGE_FLOAT)/edge/deep/ltp.pt: $(EDGE_FLOAT)/model.pt $(DATA_FILE)
	$(JD) edge ltp --run $(EDGE_FLOAT) --data $(DATA_FILE) --out $(@D) $(LTP2_ARGS) $(LTP_THREADS)

$(EDGE_FLOAT)/edge/bench.json: $(EDGE_FLOAT)/edge/ltp.pt $(LTP2) $(EDGE_INT8)/export/verify.json
	$(JD) edge bench --run $(EDGE_FLOAT) --data $(DATA_FILE) --int8-run $(EDGE_INT8) $(if $(LTP2),--ltp $(LTP2)) $(EDGE_ARGS)

edge: $(EDGE_FLOAT)/edge/ltp.pt $(LTP2)

# a ParT-style model (pair bias from the four-vectors, configs/$(PART_PRESET).yaml) benched beside the edge model
PART_PRESET ?= edge64p
PART_FLOAT  := $(RUN_DIR)/$(PART_PRESET)-float
$(PART_FLOAT)/model.pt: configs/$(PART_PRESET).yaml $(DATA_FILE) | $(STAMP)
	$(JD) train --config $(PART_PRESET) --data $(DATA_FILE) --run $(PART_FLOAT) $(TRAIN_ARGS)

$(PART_FLOAT)/edge/ltp.pt: $(PART_FLOAT)/model.pt
	$(JD) edge ltp --run $(PART_FLOAT) --data $(DATA_FILE) $(LTP_ARGS) $(LTP_THREADS)

bench-part: $(EDGE_FLOAT)/edge/ltp.pt $(PART_FLOAT)/edge/ltp.pt
	$(JD) edge bench --run $(EDGE_FLOAT) --data $(DATA_FILE) --beside $(PART_FLOAT) $(EDGE_ARGS)

bench: $(EDGE_FLOAT)/edge/bench.json $(EDGE_FLOAT)/metrics.json $(EDGE_INT8)/metrics.json

bench-onnx: $(FLOAT_RUN)/model.pt
	$(JD) bench onnx --run $(FLOAT_RUN) --data $(DATA_FILE) --out runs/bench/onnx.json

bench-train: $(DATA_FILE) | $(STAMP)
	$(JD) bench train --data $(DATA_FILE) --out runs/bench/train.json

# FPGA design-space sweep over Dask (configs/sweep-demo.yaml fine-tunes from the demo's float run)
SWEEP       ?= configs/sweep-demo.yaml
sweep: $(FLOAT_RUN)/model.pt
	$(JD) fpga sweep $(SWEEP)

# Level-1 architectures side by side (HGQ2 from scratch -> RTL -> Yosys); configs/study-demo.yaml reads the demo's
# fpga16n run as its reference (make demo first)
STUDY       ?= configs/study-demo.yaml
study: | $(STAMP) rtl-tools
	$(JD) fpga study $(STUDY)

# the full-data study: data/full.h5, the fpga16n reference at N=16 (QAT, evaluated, to RTL with Yosys: it joins the
# table) and at N=32 (fpga32n), then configs/study-full.yaml on the design-point engine (a 2-process Dask
# LocalCluster: every design a task, log in runs/study-full.log); hours on 2 cores, every finished point cached
# (README, "Level-1 design study")
FULL_REF   := DATA_PRESET=full RUN_DIR=runs/full
FULL_STUDY ?= configs/study-full.yaml
study-full: | $(STAMP) rtl-tools
	$(MAKE) data DATA_PRESET=full
	$(MAKE) runs/full/fpga16n-qat/metrics.json runs/full/fpga16n-qat/fpga/rtl.json $(FULL_REF) TRAIN_PRESET=fpga16n \
	  RTL_ARGS="$(DEMO_RTL_ARGS)"
	$(MAKE) runs/full/fpga32n-qat/metrics.json $(FULL_REF) TRAIN_PRESET=fpga32n
	mkdir -p runs
	$(JD) fpga study $(FULL_STUDY) --dask local --workers 2 > runs/study-full.log 2>&1 || \
	  { tail -n 30 runs/study-full.log; echo "error: the study failed (runs/study-full.log)"; exit 1; }
	$(JD) fpga study $(FULL_STUDY) --cached-only

# the report over every run in RUN_DIR (whatever stages have run; the rest is listed as missing)
report: $(STAMP)
	$(JD) report $(RUN_DIR)

# the demo's RTL: Verilator (Icarus Verilog takes hours to compile a full transformer) on 100 jets, and Yosys on
# every pipeline stage (with the logic depth of each)
# the demo's trigger model is the low-latency recipe with narrow products (configs/fpga16n.yaml: sigmoid attention,
# no norm, truncation, 4-bit weights and attention operands): every stage synthesized, 0 DSP
DEMO_PRESET   ?= fpga16n
DEMO_RTL_ARGS ?= --simulator verilator --n-sim 100 --synth
demo: $(STAMP)
	$(MAKE) data DATA_PRESET=default
	$(MAKE) baselines export csim rtl crosscheck bench DATA_PRESET=default TRAIN_PRESET=$(DEMO_PRESET) \
	  RTL_ARGS="$(DEMO_RTL_ARGS) $(RTL_ARGS)"
	$(MAKE) report

# Icarus Verilog (RTL simulation) and Yosys (open-source synthesis) are system packages
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
rtl-tools:
	@command -v iverilog >/dev/null && command -v yosys >/dev/null && command -v verilator >/dev/null || { \
	  echo "installing iverilog, verilator and yosys with apt-get"; \
	  $(SUDO) apt-get install -y -q iverilog verilator yosys >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q iverilog verilator yosys >/dev/null; } || \
	  { echo "error: could not install the RTL tools (Debian: apt-get install iverilog verilator yosys)"; exit 1; }; }

# headless Chromium renders the HTML report in the tests
report-tools:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "installing chromium with apt-get (headless check of the HTML report)"; \
	  $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; } || \
	  { echo "error: could not install chromium (Debian: apt-get install chromium)"; exit 1; }; }

# two pytest workers, one test file each at a time (module fixtures are built once): 10-12.5 min of pytest on
# 2 cores from a fresh clone (README); TEST_WORKERS=0 runs serially
TEST_WORKERS ?= 2
test: $(STAMP) rtl-tools report-tools
	$(BIN)/python -m pytest -q --durations=15 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache

clean-data:
	rm -rf data
