"""The tiny training run of the train.py tests, and the environment of a train.py child process."""

import os

# vgg_small at 1/16 width on 16x16 digits, 2 epochs of 2 steps: seconds per run.
TINY = dict(
    model="vgg_small",
    dataset="digits",
    width_multiplier=0.0625,
    image_size=16,
    epochs=2,
    steps_per_epoch=2,
    batch_size=16,
    bn_calibration_steps=2,
    verbose=0,
)
TINY_FLAGS = [f"--{k}={v}" for k, v in TINY.items() if k != "verbose"]


def child_env(**extra):
    """This process's environment for a child train.py: quiet TF, no GPU, no inherited TF_CONFIG."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env
