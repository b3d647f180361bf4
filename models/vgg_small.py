"""VGG-Small (LQ-Nets, Zhang et al. 2018), the paper's CIFAR-10 network.

conv128 - conv128 - pool - conv256 - conv256 - pool - conv512 - conv512 - pool - fc,
3x3 convs without bias, each followed by BN and the activation. At 32x32x3 and 10
classes it has 4,656,512 weights (4,571,136 of them in the five quantized convs). The
first conv and the classifier are full precision; max pooling comes before the BN
(conv - pool - BN - activation), as is usual for binary networks.
"""

import keras

from models import method as method_lib

BLOCKS = ("conv",)  # the authors' --basic_block_type=conv: plain conv-BN blocks
FILTERS = (128, 128, 256, 256, 512, 512)
POOL_AFTER = (2, 4, 6)  # 1-based conv indices followed by 2x2 max pooling


def vgg_small(
    *,
    method="slb",
    wbits=1,
    abits=1,
    input_shape=(32, 32, 3),
    num_classes=10,
    width_multiplier=1.0,
    activation_quantizer="dorefa",
    block="conv",
    sbn=True,
    sync_bn=False,
    ste_clip=False,
    logits_init="random",
    input_normalization=None,
    name="vgg_small",
):
    """Builds VGG-Small as a Keras functional model (logits output).

    Args:
        method: "slb" (default), "ste" or "fp" (see `models.method.Method`).
        wbits: weight bits of the quantized convs, 1 to 8.
        abits: activation bits at their inputs, 1 to 16 or 32.
        input_shape: (height, width, channels); height and width >= 8.
        num_classes: size of the (full-precision) classifier, >= 2.
        width_multiplier: scales every conv's filters (1.0 = the paper's network;
            smaller values give quick test models).
        activation_quantizer: "dorefa" or "pact" for abits 2..8.
        block: "conv", the only block type (conv - [pool] - BN - activation);
            accepted so that every builder takes `block`.
        sbn: state batch normalization after the SLB convs (method "slb").
        sync_bn: synchronize batch statistics across replicas.
        ste_clip: for method "ste", clip the latent weights to [-1, 1].
        logits_init: for method "slb", "random" (default) or "quadratic".
        input_normalization: `(mean, std)` per channel, in the units of the images
            fed to the model: a `keras.layers.Normalization` ("input_norm") first,
            saved and exported with the model (train.py passes the data set's); None:
            the input is used as it is.
        name: model name.

    Returns:
        A `keras.Model` (not compiled) with layers named conv1..conv6, bn1..bn6,
        pool2/pool4/pool6, flatten and fc.

    Raises:
        ValueError: for an argument out of range, naming it.

    Example:

    >>> model = vgg_small(method="ste", wbits=1, abits=1, width_multiplier=0.0625)
    >>> model(np.zeros((2, 32, 32, 3), "float32")).shape
    TensorShape([2, 10])
    >>> [layer.name for layer in model.layers[1:5]]
    ['conv1', 'bn1', 'conv2', 'pool2']
    """
    m = method_lib.Method(
        method=method,
        wbits=wbits,
        abits=abits,
        activation_quantizer=activation_quantizer,
        sbn=sbn,
        sync_bn=sync_bn,
        ste_clip=ste_clip,
        logits_init=logits_init,
    )
    method_lib.validate_choice("block", block, BLOCKS)
    input_shape = method_lib.validate_input_shape(input_shape, min_size=8)
    method_lib.validate_num_classes(num_classes)
    filters = [method_lib.scaled_filters(f, width_multiplier) for f in FILTERS]

    inputs, x = method_lib.model_input(input_shape, input_normalization)
    for index, channels in enumerate(filters, start=1):
        first = index == 1
        last = index == len(filters)
        x = m.conv2d(channels, 3, name=f"conv{index}", quantized=not first)(x)
        if index in POOL_AFTER:
            x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
        x = m.batch_norm(name=f"bn{index}", after_quantized=not first)(x)
        x = m.activation(x, name=f"relu{index}", feeds_quantized=not last)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = m.dense(num_classes, name="fc", quantized=False, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
