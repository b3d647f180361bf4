"""ResNet-18 for ImageNet (He et al. 2016), the paper's ImageNet network.

7x7/2 full-precision stem conv, BN, activation, 3x3/2 max pooling, four stages of two
basic blocks (64, 128, 256, 512 filters, strides 1, 2, 2, 2), global average pooling and
a full-precision classifier. Projection shortcuts (1x1 strided conv + BN) are quantized
like the other inner convs (the blocks are those of `models.resnet_cifar`).
"""

import keras

from models import method as method_lib
from models import resnet_cifar

STAGE_FILTERS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


def resnet18(
    *,
    method="slb",
    wbits=1,
    abits=1,
    input_shape=(224, 224, 3),
    num_classes=1000,
    width_multiplier=1.0,
    activation_quantizer="dorefa",
    sbn=True,
    sync_bn=False,
    name="resnet18",
):
    """Builds the ImageNet ResNet-18 as a Keras functional model (logits output).

    Args:
        method: "slb" (default), "ste" or "fp" (see `models.method.Method`).
        wbits: weight bits of the quantized convs, 1 to 8.
        abits: activation bits at their inputs, 1 to 8 or 32.
        input_shape: (height, width, channels); height and width >= 32 (the
            network downsamples by 32; lower resolutions are for quick tests).
        num_classes: size of the (full-precision) classifier, >= 2.
        width_multiplier: scales every conv's filters (1.0 = 64..512).
        activation_quantizer: "dorefa" (default) or "pact", for abits 2..8.
        sbn: state batch normalization after the SLB convs (method "slb").
        sync_bn: synchronize batch statistics across replicas.
        name: model name.

    Returns:
        A `keras.Model` (not compiled): stem_conv, stem_bn, stem_pool,
        stage{1..4}_block{1,2}_*, pool, fc.

    Raises:
        ValueError: for an argument out of range, naming it.

    Example:

    >>> model = resnet18(method="fp", input_shape=(32, 32, 3), num_classes=5,
    ...                  width_multiplier=0.125)
    >>> model(np.zeros((1, 32, 32, 3), "float32")).shape
    TensorShape([1, 5])
    """
    m = method_lib.Method(
        method=method,
        wbits=wbits,
        abits=abits,
        activation_quantizer=activation_quantizer,
        sbn=sbn,
        sync_bn=sync_bn,
    )
    input_shape = method_lib.validate_input_shape(input_shape, min_size=32)
    method_lib.validate_num_classes(num_classes)
    filters = [method_lib.scaled_filters(f, width_multiplier) for f in STAGE_FILTERS]

    inputs = keras.Input(input_shape, name="image")
    x = m.conv2d(filters[0], 7, strides=2, name="stem_conv", quantized=False)(inputs)
    x = m.batch_norm(name="stem_bn", after_quantized=False)(x)
    x = m.activation(x, name="stem_relu")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    x = resnet_cifar.apply_stages(x, m, filters, STAGE_STRIDES, BLOCKS_PER_STAGE)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = m.dense(num_classes, name="fc", quantized=False, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
