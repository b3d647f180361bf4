"""Test helper shared by the input-pipeline and training tests."""

import os

import tensorflow_datasets as tfds


def write_tfds_metadata(data_dir, name, split_sizes):
    """Writes a data set's TFDS metadata so the builder under data_dir is prepared."""
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    builder.info.set_splits(
        tfds.core.SplitDict(
            [
                tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0, filename_template=None)
                for s, n in split_sizes.items()
            ]
        )
    )
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)
