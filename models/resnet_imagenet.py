"""ResNet-18 for ImageNet (He et al. 2016), the paper's ImageNet network.

7x7/2 full-precision stem conv, 3x3/2 max pooling, four stages of two basic blocks (64,
128, 256, 512 filters, strides 1, 2, 2, 2), global average pooling and a full-precision
classifier. Two block types (`block=`):

- "bireal" (default, the authors' `--arch=bireal_resnet18`, Liu et al. 2018's Bi-Real
  Net with the authors' convprelubn units): an identity shortcut around EVERY 3x3 conv,
  each unit being conv -> PReLU -> BN, then the addition. Where a unit changes shape the
  shortcut is Bi-Real's real-valued downsampling: 2x2 average pooling, a
  full-precision 1x1 conv and BN (these 3 convs hold 1.5% of the weights; Bi-Real Net
  keeps them real-valued because the shortcuts carry the real-valued information the
  binary convs lose; the units are `models.resnet_cifar.apply_bireal_unit`, which
  ResNet-20 offers too). The stem is conv -> PReLU -> BN -> max pooling.
- "standard": the basic blocks of `models.resnet_cifar` (conv-BN-ReLU-conv-BN + a
  shortcut around the pair, ReLU), whose projection shortcuts (1x1 strided conv + BN)
  are quantized like the other inner convs.
"""

import keras

from models import method as method_lib
from models import resnet_cifar

BLOCKS = ("bireal", "standard")
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
    activation_quantizer="pact",
    block="bireal",
    sbn=True,
    sync_bn=False,
    ste_clip=False,
    logits_init="random",
    input_normalization=None,
    name="resnet18",
):
    """Builds the ImageNet ResNet-18 as a Keras functional model (logits output).

    Args:
        method: "slb" (default), "ste" or "fp" (see `models.method.Method`).
        wbits: weight bits of the quantized convs, 1 to 8.
        abits: activation bits at their inputs, 1 to 16 or 32.
        input_shape: (height, width, channels); height and width >= 32 (the
            network downsamples by 32; lower resolutions are for quick tests).
        num_classes: size of the (full-precision) classifier, >= 2.
        width_multiplier: scales every conv's filters (1.0 = 64..512).
        activation_quantizer: "pact" (default, the authors' `--pact`) or "dorefa",
            for abits 2..8.
        block: "bireal" (default, the authors') or "standard" (see the module
            docstring).
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
        A `keras.Model` (not compiled): stem_conv, stem_bn, stem_pool,
        stage{1..4}_block{1,2}_* (bireal: stage{i}_block{j}_unit{1,2}_*), pool, fc.

    Raises:
        ValueError: for an argument out of range, naming it.

    Example:

    >>> model = resnet18(method="fp", input_shape=(32, 32, 3), num_classes=5,
    ...                  width_multiplier=0.125)
    >>> model(np.zeros((1, 32, 32, 3), "float32")).shape
    TensorShape([1, 5])
    >>> bireal = resnet18(method="slb", input_shape=(32, 32, 3), width_multiplier=0.125)
    >>> len(slb_keras.slb_layers(bireal))  # the 16 3x3 convs; shortcuts are real-valued
    16
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
    input_shape = method_lib.validate_input_shape(input_shape, min_size=32)
    method_lib.validate_num_classes(num_classes)
    filters = [method_lib.scaled_filters(f, width_multiplier) for f in STAGE_FILTERS]

    inputs, x = method_lib.model_input(input_shape, input_normalization)
    x = m.conv2d(filters[0], 7, strides=2, name="stem_conv", quantized=False)(x)
    x = resnet_cifar.apply_stem_norm(x, m, prelu=block == "bireal")
    apply_block = resnet_cifar.apply_bireal_block if block == "bireal" else resnet_cifar.apply_basic_block
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    x = resnet_cifar.apply_stages(x, m, filters, STAGE_STRIDES, BLOCKS_PER_STAGE, apply_block)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = m.dense(num_classes, name="fc", quantized=False, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
