#!/usr/bin/env bash
# How the README's TensorBoard figures were taken: a real four-job sweep, a real TensorBoard,
# headless Chromium (apt-get install chromium). Run from the repository root:
#   bash docs/tensorboard-screenshots.sh            (a few minutes on a CPU)
set -euo pipefail
work=$(mktemp -d)
python -m nerf_lab.train -m model.depth=2,4 sampling.n_c=16,32 data.resolution=64 data.batch_rays=512 \
  data.val_views=2 data.test_views=4 trainer.max_steps=200 trainer.val_check_interval=20 \
  trainer.log_every_n_steps=10 trainer.enable_progress_bar=false hydra.sweep.dir="$work/sweep"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tensorboard --logdir "$work/sweep" --host 127.0.0.1 --port "$port" --load_fast false &
server=$!
trap 'kill $server' EXIT
sleep 15
shot() {  # name, dashboard, window size, extra flags
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$3" ${4:-} \
    --virtual-time-budget=15000 --screenshot="docs/tensorboard-$1.png" "http://127.0.0.1:$port/#$2"
}
shot timeseries timeseries 1400,900
shot custom-scalars custom_scalars 1400,760
shot images 'images&tagFilter=val' 1400,900
# HPARAMS: wide enough for every ticked column at 3/4 scale, then the filter column cut off.
shot hparams hparams 2400,400 --force-device-scale-factor=0.75
python -c 'from PIL import Image; im = Image.open("docs/tensorboard-hparams.png"); im.crop((340, 0, im.width, 250)).save("docs/tensorboard-hparams.png")'
