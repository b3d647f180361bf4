"""Workaround for two Keras bugs that stop `fit`/`evaluate` under MultiWorkerMirroredStrategy.

keras-team/keras#20585: at their first step, Keras 3 `fit` and `evaluate` pass the first
distributed batch whole to `strategy.reduce` (for the shapes of the symbolic build; the
local replica's part gives the same shapes), and reduce each step's scalar logs with
`axis=0`. `multi_worker_fixes` patches both for the duration of a `with` block: the
symbolic build gets the local replica's batch, and Keras's multi-worker branch for the
step logs is switched off. Without that branch a step's logs are this worker's values
(progress bar only); the epoch logs come from the metric variables (sync-on-read sums),
whose read adds up all workers. Other strategies are left alone.

This is the only module of train.py's `training` package that uses private Keras
(`keras.src`); the library's own uses go through `slb_keras.keras_private`.

Versions: the patch is applied only for the Keras versions it was verified on
(`VERIFIED_KERAS`: 3.15.x, where the two-worker test of tests/test_train.py matches a
one-device run). For any other version it is skipped with a `RuntimeWarning`, because
patching private functions whose meaning may have changed could alter training
silently, whereas an unpatched Keras that still has the bugs fails loudly at the first
step. Verify a new version with that test, then add it to `VERIFIED_KERAS`.
"""

import contextlib
import warnings

import keras
import tensorflow as tf

VERIFIED_KERAS = ("3.15",)  # major.minor versions the patch was verified on
KERAS_ISSUE = "keras-team/keras#20585"


def is_verified(version):
    """Whether the patch was verified on Keras `version` (a version string).

    Example:

    >>> is_verified("3.15.1"), is_verified("3.16.0")
    (True, False)
    """
    return ".".join(str(version).split(".")[:2]) in VERIFIED_KERAS


@contextlib.contextmanager
def multi_worker_fixes(model, strategy):
    """Lets `model.fit`/`evaluate` run under MultiWorkerMirroredStrategy on Keras 3.15.

    Under other strategies, and on Keras versions not in `VERIFIED_KERAS` (with a
    warning), it does nothing. See the module docstring.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> with multi_worker_fixes(model, tf.distribute.get_strategy()):  # not multi-worker
    ...     model.predict(tf.ones((1, 2)), verbose=0).shape
    (1, 1)
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    if not is_verified(keras.__version__):
        warnings.warn(
            f"Keras {keras.__version__} is not among the versions the multi-worker workaround "
            f"for {KERAS_ISSUE} was verified on ({', '.join(VERIFIED_KERAS)}): training runs on "
            "unpatched Keras, which fails at its first step if the bug is still there.",
            RuntimeWarning,
            stacklevel=3,
        )
        yield
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(batches)
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    original = tf_trainer._collective_all_reduce_multi_worker
    model._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._collective_all_reduce_multi_worker = lambda strategy: False
    try:
        yield
    finally:
        tf_trainer._collective_all_reduce_multi_worker = original
        del model._maybe_symbolic_build
