"""Assembling one input pipeline from a `Source`: the epoch stream, sharding, batches.

Order of operations (after tensorflow/models `dataset_factory`): read, cache (cifar10),
then per epoch shuffle + repeat + take one epoch, keep this pipeline's share, map
(decode / augment / resize, AUTOTUNE), batch per replica, prefetch. The validation and
test splits are read once, in order, without augmentation.
"""

import functools

import tensorflow as tf

from input_pipeline.checks import check_divisible

_EPOCH_GRAPH_SEED = 87654321


def build(source, split, global_batch_size, seed, initial_epoch, steps_per_epoch, context):
    """One input pipeline; `make_datasets` binds all but `context` (the InputContext).

    Example:

    >>> from input_pipeline.sources import resolve_source
    >>> train = build(resolve_source("digits", None, 16), "train", 32, 0, 0, None, None)
    >>> train.element_spec[0].shape
    TensorShape([32, 16, 16, 3])
    """
    pipeline_id, num_pipelines, batch_size = _placement(context, global_batch_size)
    keep_share = functools.partial(
        _keep_share,
        pipeline_id=pipeline_id,
        num_pipelines=num_pipelines,
        global_batch_size=global_batch_size,
    )
    if split == "train":
        steps = steps_per_epoch or source.info.steps_per_epoch(global_batch_size)
        stream = _train_stream(source, seed, initial_epoch, steps * global_batch_size)
        dataset = _train_batches(source, keep_share(stream), batch_size)
    else:
        dataset = _evaluation_batches(source, split, keep_share, batch_size)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _train_batches(source, stream, batch_size):
    """Augments a `(key, position, raw_image, label)` stream into full batches, forever."""
    dataset = stream.map(
        lambda key, position, image, label: (
            source.train_fn(image, tf.stack([key, position])),
            label,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


def _evaluation_batches(source, split, keep_share, batch_size):
    """The validation or test split once, in order: this pipeline's share, preprocessed, batched."""
    dataset = source.load(split, 0)
    dataset = dataset.enumerate().map(lambda position, example: (0, position, *example))
    dataset = keep_share(dataset).map(
        lambda key, position, image, label: (source.test_fn(image), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if source.cache:
        dataset = dataset.cache()
    return dataset.batch(batch_size)


def _placement(input_context, global_batch_size):
    """(this pipeline's id, number of pipelines, per-replica batch size)."""
    if input_context is None:
        return 0, 1, global_batch_size
    check_divisible(global_batch_size, input_context.num_replicas_in_sync)
    return (
        input_context.input_pipeline_id,
        input_context.num_input_pipelines,
        input_context.get_per_replica_batch_size(global_batch_size),
    )


def _train_stream(source, seed, initial_epoch, examples_per_epoch):
    """Infinite `(key, position, raw_image, label)` stream, epoch by epoch.

    Epoch `e` shuffles (and, when it needs more examples than the split holds, reshuffles
    and repeats) the training split with a seed drawn from `(seed, e)` and takes
    `examples_per_epoch` examples; `key` (also drawn from `(seed, e)`) and `position`
    (0 .. examples_per_epoch - 1) seed each example's augmentation.
    """
    examples = source.load("train", seed)
    if source.cache:
        examples = examples.cache()

    def one_epoch(epoch):
        shuffle_seed, key = tf.unstack(
            tf.random.stateless_uniform(
                [2], seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
                minval=None, maxval=None, dtype=tf.int64,
            )
        )
        # A tensor op seed trips tf.data's `(global, op) == (0, 0)` check when the global
        # seed is 0 (keras.utils.set_random_seed(0)); a fixed non-zero graph seed for this
        # function graph only makes the order a function of (seed, epoch) alone.
        tf.compat.v1.get_default_graph().seed = _EPOCH_GRAPH_SEED
        epoch_examples = examples.shuffle(source.shuffle_buffer, seed=shuffle_seed)
        epoch_examples = epoch_examples.repeat().take(examples_per_epoch)
        positions = tf.data.Dataset.range(examples_per_epoch)
        return tf.data.Dataset.zip((positions, epoch_examples)).map(
            lambda position, example: (key, position, *example)
        )

    return tf.data.Dataset.counter(initial_epoch).flat_map(one_epoch)


def _keep_share(dataset, *, pipeline_id, num_pipelines, global_batch_size):
    """Keeps this pipeline's contiguous slice of every global batch (by position)."""
    if num_pipelines == 1:
        return dataset
    share = global_batch_size // num_pipelines
    return dataset.filter(
        lambda key, position, image, label: (position % global_batch_size) // share
        == pipeline_id
    )
