# Sourced on the GPU machine (see benchmarks/RESULTS.md): Python deps from .whl/, ccache from
# Debian packages in .carry/debs/, GitHub's llama.cpp redirected to the carried bare repository.
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/ccache-root && for f in .carry/debs/*.deb; do dpkg -x "$f" /tmp/ccache-root; done
export PATH=/tmp/ccache-root/usr/bin:$PATH
export LD_LIBRARY_PATH=/tmp/ccache-root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CCACHE_DIR=/root/ccache HARNESS_CACHE=/root/hc
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="url.file://$PWD/.carry/upstream.git.insteadOf" GIT_CONFIG_VALUE_0=https://github.com/ggml-org/llama.cpp
set +e
