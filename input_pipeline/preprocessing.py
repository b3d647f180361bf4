"""Per-image preprocessing: scaling, normalization, resizing and the seeded augmentations.

cifar10: pad 4 + random 32x32 crop + random horizontal flip (train); both splits
normalized by the CIFAR-10 channel mean / std. imagenet2012: random-resized crop (area
8%-100%, aspect 3/4-4/3) + flip (train), the centre square of side 224/256 of the
shorter side (test), decoding only the crop; normalized by the ImageNet mean / std.
Every random choice is seeded by a `[key, position]` pair (see `pipeline`).
"""

import tensorflow as tf

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_PAD = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CENTRE_FRACTION = 224 / 256
IMAGENET_AREA_RANGE = (0.08, 1.0)
IMAGENET_ASPECT_RANGE = (3 / 4, 4 / 3)


def unit_float(image):
    """uint8 0..255 -> float32 0..1; float images are only cast.

    Example:

    >>> unit_float(tf.constant([0, 255], tf.uint8)).numpy()
    array([0., 1.], dtype=float32)
    """
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def normalize(image, mean, std):
    """(image - mean) / std, per channel (the last axis).

    Example:

    >>> normalize(tf.constant([[0.5, 1.0]]), mean=(0.5, 0.0), std=(1.0, 0.5)).numpy()
    array([[0., 2.]], dtype=float32)
    """
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def resize(image, image_size):
    """The image resized to `image_size` x `image_size`; unchanged when it has that size.

    Example:

    >>> resize(tf.zeros((32, 32, 3)), 16).shape
    TensorShape([16, 16, 3])
    """
    if image.shape[0] == image_size and image.shape[1] == image_size:
        return image
    return tf.image.resize(image, (image_size, image_size))


def cifar10_train(image, seed, image_size):
    """A seeded padded crop and flip of a uint8 CIFAR-10 image, resized and normalized.

    Example:

    >>> image = tf.zeros((32, 32, 3), tf.uint8)
    >>> cifar10_train(image, tf.constant([1, 2], tf.int64), image_size=32).shape
    TensorShape([32, 32, 3])
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = unit_float(image)
    image = tf.pad(image, [[CIFAR10_PAD, CIFAR10_PAD], [CIFAR10_PAD, CIFAR10_PAD], [0, 0]])
    image = tf.image.stateless_random_crop(image, (32, 32, 3), crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return normalize(resize(image, image_size), CIFAR10_MEAN, CIFAR10_STD)


def cifar10_test(image, image_size):
    """A uint8 CIFAR-10 image, resized and normalized (no augmentation).

    Example:

    >>> cifar10_test(tf.zeros((32, 32, 3), tf.uint8), image_size=24).shape
    TensorShape([24, 24, 3])
    """
    return normalize(resize(unit_float(image), image_size), CIFAR10_MEAN, CIFAR10_STD)


def imagenet_train(jpeg, seed, image_size):
    """Random-resized crop of a JPEG, decoding only the crop, then a random flip.

    Example:

    >>> jpeg = tf.io.encode_jpeg(tf.zeros((40, 60, 3), tf.uint8))
    >>> imagenet_train(jpeg, tf.constant([1, 2], tf.int64), image_size=16).shape
    TensorShape([16, 16, 3])
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(jpeg),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=IMAGENET_ASPECT_RANGE,
        area_range=IMAGENET_AREA_RANGE,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.image.resize(image, (image_size, image_size)) / 255.0
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def imagenet_test(jpeg, image_size):
    """Centre square of side 224/256 of the shorter side, resized to image_size.

    Example:

    >>> imagenet_test(tf.io.encode_jpeg(tf.zeros((40, 60, 3), tf.uint8)), image_size=16).shape
    TensorShape([16, 16, 3])
    """
    shape = tf.image.extract_jpeg_shape(jpeg)
    height, width = shape[0], shape[1]
    shorter = tf.cast(tf.minimum(height, width), tf.float32)
    side = tf.maximum(tf.cast(shorter * IMAGENET_CENTRE_FRACTION, tf.int32), 1)
    window = tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.image.resize(image, (image_size, image_size)) / 255.0
    return normalize(image, IMAGENET_MEAN, IMAGENET_STD)
