"""The optimizer of a run: SGD with momentum or Adam, a learning rate schedule, weight decay.

The schedules count optimizer steps, so a resumed run (its step counter restored)
continues the schedule where it stopped.
"""

import keras

from slb_keras.core import optimizers

SGD_MOMENTUM = 0.9
STEP_DECAY = 0.1


def make_lr_schedule(config, steps_per_epoch):
    """cosine (to 0 at the end) or step (x0.1 at `lr_step_epochs`) schedule; constant: a float.

    Example:

    >>> from training.config import Config, resolve
    >>> schedule = make_lr_schedule(resolve(Config(model="resnet18", epochs=10, lr_schedule="step")), 100)
    >>> [round(float(schedule(step)), 6) for step in (0, 599, 600)]  # x0.1 from epoch 6
    [0.001, 0.001, 0.0001]
    """
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.lr, config.epochs * steps_per_epoch)
    if config.lr_schedule == "step":
        # PiecewiseConstantDecay switches after step b: the decayed rate starts exactly
        # at the first step of epoch round(f * epochs).
        boundaries = [
            max(0, round(f * config.epochs) * steps_per_epoch - 1) for f in config.lr_step_epochs
        ]
        values = [config.lr * STEP_DECAY**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return config.lr


def make_optimizer(config, steps_per_epoch):
    """SGD (momentum 0.9) or Adam with the learning rate schedule and weight decay.

    `weight_decay_mode="coupled"` (the recipes: PyTorch's, added to the gradient before
    momentum, on every trainable variable) uses `slb_keras.core.optimizers.CoupledSGD` /
    `CoupledAdam`; "decoupled" uses Keras's own `weight_decay`.

    Example:

    >>> from training.config import Config, resolve
    >>> optimizer = make_optimizer(resolve(Config()), steps_per_epoch=10)
    >>> type(optimizer).__name__, optimizer.momentum, optimizer.coupled_weight_decay
    ('CoupledSGD', 0.9, 0.0005)
    >>> optimizer = make_optimizer(resolve(Config(weight_decay_mode="decoupled")), 10)
    >>> type(optimizer).__name__, optimizer.weight_decay
    ('SGD', 0.0005)
    """
    lr = make_lr_schedule(config, steps_per_epoch)
    if config.weight_decay_mode == "coupled":
        decay = dict(coupled_weight_decay=config.weight_decay)
        sgd, adam = optimizers.CoupledSGD, optimizers.CoupledAdam
    else:
        decay = dict(weight_decay=config.weight_decay or None)
        sgd, adam = keras.optimizers.SGD, keras.optimizers.Adam
    if config.optimizer == "sgd":
        return sgd(lr, momentum=SGD_MOMENTUM, **decay)
    return adam(lr, **decay)
