"""The distribution strategy of a run and this process's role in it.

`make_strategy` maps `--strategy` to a `tf.distribute.Strategy`; `worker_role` says
whether this process is the chief of a multi-worker cluster (the one that writes the
run's files) and its task id (which names its own backup directory).
"""

import os

import tensorflow as tf


def make_strategy(name):
    """The `tf.distribute.Strategy` for `--strategy=name` (one of `config.STRATEGIES`).

    auto: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy over the
    GPUs when there are several, else the default strategy (one device).

    Example:

    >>> make_strategy("one_device").num_replicas_in_sync
    1
    """
    if name == "multi_worker" or (name == "auto" and os.environ.get("TF_CONFIG")):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role(strategy):
    """(is_chief, task id) of this process in a multi-worker cluster; (True, 0) otherwise.

    The chief is task "chief", or worker 0 in a cluster without one.

    Example:

    >>> worker_role(tf.distribute.get_strategy())
    (True, 0)
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0), task_id
