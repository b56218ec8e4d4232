# Sourced by the GPU-machine scripts (h200_codec_decoder.sh, h200_lm.sh), from the checkout's root: unbuffered Python
# with the checkout on its path, and the wheels carried in .whl/ (scripts/device_prepare.sh) installed to /tmp/site
# and put on the path when there are any (WHEELS=0 skips them). `device_report` prints the machine's GPU and torch.
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${WHEELS:-1}" = 1 ] && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

device_report() {
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
}
