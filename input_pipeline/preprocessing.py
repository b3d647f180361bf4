"""Per-image preprocessing: resizing and the seeded augmentations, in the source's units.

cifar10 and image folders: pad 1/8 of the side (4 at 32x32) + random crop back to the
image's size + random horizontal flip (train; `pad_crop_flip`). imagenet2012:
random-resized crop (area 8%-100%, aspect 3/4-4/3) + flip (train), the centre square of
side 224/256 of the shorter side (test), decoding only the crop. Every random choice is
seeded by a `[key, position]` pair (see `pipeline`).

Images keep the values the data source gives (0..255 for TFDS and image files) as
float32: the normalization by the channel mean / std (`CIFAR10_MEAN` ... below, scaled
to those units in `DatasetInfo.channel_mean`) is the model's first layer, so a saved or
exported model takes images as the source gives them.
"""

import tensorflow as tf

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CENTRE_FRACTION = 224 / 256
IMAGENET_AREA_RANGE = (0.08, 1.0)
IMAGENET_ASPECT_RANGE = (3 / 4, 4 / 3)


PIXEL_SCALE = 255.0  # the units of uint8 images; the mean / std above are for 0..1


def scaled(values, scale=PIXEL_SCALE):
    """Channel statistics given for 0..1 images, in the units of 0..255 images.

    Example:

    >>> scaled((0.5, 0.25))
    (127.5, 63.75)
    """
    return tuple(float(value) * scale for value in values)


def resize(image, image_size):
    """The image resized to `image_size` x `image_size`; unchanged when it has that size.

    Example:

    >>> resize(tf.zeros((32, 32, 3)), 16).shape
    TensorShape([16, 16, 3])
    """
    if image.shape[0] == image_size and image.shape[1] == image_size:
        return image
    return tf.image.resize(image, (image_size, image_size))


def pad_crop_flip(image, seed):
    """A seeded random crop of the zero-padded image (pad: 1/8 of each side, 4 at 32) and a
    random horizontal flip, at the image's own size; float32 in the image's units.

    The augmentation of the paper's CIFAR-10 runs (and of image folders): the crop
    shifts the image by up to 1/8 of its side in each direction.

    Example:

    >>> image = tf.zeros((4, 4, 1), tf.uint8)
    >>> pad_crop_flip(image, tf.constant([1, 2], tf.int64)).shape
    TensorShape([4, 4, 1])
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = tf.cast(image, tf.float32)
    height, width, channels = image.shape
    pad_h, pad_w = max(1, round(height / 8)), max(1, round(width / 8))
    image = tf.pad(image, [[pad_h, pad_h], [pad_w, pad_w], [0, 0]])
    image = tf.image.stateless_random_crop(image, (height, width, channels), crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def cifar10_train(image, seed, image_size):
    """A seeded padded crop and flip of a uint8 CIFAR-10 image, resized, float32 0..255.

    Example:

    >>> image = tf.zeros((32, 32, 3), tf.uint8)
    >>> cifar10_train(image, tf.constant([1, 2], tf.int64), image_size=32).shape
    TensorShape([32, 32, 3])
    """
    return resize(pad_crop_flip(tf.ensure_shape(image, (32, 32, 3)), seed), image_size)


def cifar10_test(image, image_size):
    """A uint8 CIFAR-10 image, resized, as float32 0..255 (no augmentation).

    Example:

    >>> cifar10_test(tf.zeros((32, 32, 3), tf.uint8), image_size=24).shape
    TensorShape([24, 24, 3])
    """
    return resize(tf.cast(image, tf.float32), image_size)


def imagenet_train(jpeg, seed, image_size):
    """Random-resized crop of a JPEG, decoding only the crop, then a random flip; float32 0..255.

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
    image = tf.image.resize(image, (image_size, image_size))
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def imagenet_test(jpeg, image_size):
    """Centre square of side 224/256 of the shorter side, resized to image_size; float32 0..255.

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
    return tf.image.resize(image, (image_size, image_size))
