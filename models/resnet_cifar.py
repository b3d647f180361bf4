"""ResNet-20 for CIFAR (He et al. 2016, 16/32/64 channels), the paper's second CIFAR-10 network.

3x3 full-precision stem conv, three stages of three basic blocks (16, 32, 64 filters,
strides 1, 2, 2), global average pooling and a full-precision classifier. Two block
types (`block=`):

- "convprelubn" (default, the authors' `--basic_block_type=convprelubn`): each conv is
  followed by PReLU then BN (conv -> PReLU -> BN), the shortcut is added after the
  second BN and nothing follows the addition; the quantized convs see the block input
  directly (their own quantizer: sign at 1 bit, PACT/DoReFa clipping at 2+ bits). The
  stem is conv -> PReLU -> BN too.
- "standard": He et al.'s post-activation block, conv -> BN -> ReLU -> conv -> BN, add,
  ReLU (the ReLU before a 1-bit sign quantizer is left out: the sign is the
  nonlinearity).
- "bireal": Liu et al. 2018's Bi-Real units, the blocks of the authors' ResNet-18
  (`models.resnet_imagenet`) on ResNet-20's stages: an identity shortcut around EVERY
  3x3 conv (conv -> PReLU -> BN, then the addition), so the real-valued signal reaches
  every binary conv's output; where a unit changes shape the shortcut is 2x2 average
  pooling, a full-precision 1x1 conv and BN. Not the authors' CIFAR network: a
  stronger 1-bit baseline many binary-network papers use on CIFAR-10.

**Decision** (convprelubn and standard): where a block changes shape, the shortcut is a
1x1 strided conv + BN (option B), quantized like every other inner conv: the paper
keeps only the first conv and the last dense layer in full precision, and ResNet-20's
two shortcut convs hold 2.6% of its weights. Bi-Real keeps its downsampling shortcuts
real-valued, as Bi-Real Net does (the shortcuts carry the real-valued information).
"""

import keras

from models import method as method_lib

BLOCKS = ("convprelubn", "standard", "bireal")
STAGE_FILTERS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)
BLOCKS_PER_STAGE = 3


def apply_basic_block(x, m, filters, *, stride, name, feeds_quantized=True):
    """Post-activation basic block: conv-BN-act-conv-BN + shortcut, then act.

    Args:
        x: input tensor (channels last).
        m: the `models.method.Method` choosing the layer classes.
        filters: output channels.
        stride: stride of the first conv (and of the projection shortcut).
        name: prefix of the block's layer names.
        feeds_quantized: whether the block's output enters a quantized layer
            (decides the final activation, see `Method.activation`).

    Returns:
        The block's output tensor.
    """
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = m.conv2d(filters, 1, strides=stride, name=f"{name}_shortcut_conv")(x)
        shortcut = m.batch_norm(name=f"{name}_shortcut_bn")(shortcut)
    y = m.conv2d(filters, 3, strides=stride, name=f"{name}_conv1")(x)
    y = m.batch_norm(name=f"{name}_bn1")(y)
    y = m.activation(y, name=f"{name}_relu1")
    y = m.conv2d(filters, 3, name=f"{name}_conv2")(y)
    y = m.batch_norm(name=f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return m.activation(y, name=f"{name}_out", feeds_quantized=feeds_quantized)


def apply_convprelubn_block(x, m, filters, *, stride, name, feeds_quantized=True):
    """The authors' "convprelubn" basic block: (conv-PReLU-BN) x 2 + shortcut.

    Same arguments as `apply_basic_block` (`feeds_quantized` is unused: no
    activation follows the addition).
    """
    del feeds_quantized
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = m.conv2d(filters, 1, strides=stride, name=f"{name}_shortcut_conv")(x)
        shortcut = m.batch_norm(name=f"{name}_shortcut_bn")(shortcut)
    y = m.conv2d(filters, 3, strides=stride, name=f"{name}_conv1")(x)
    y = m.prelu(y, name=f"{name}_prelu1")
    y = m.batch_norm(name=f"{name}_bn1")(y)
    y = m.conv2d(filters, 3, name=f"{name}_conv2")(y)
    y = m.prelu(y, name=f"{name}_prelu2")
    y = m.batch_norm(name=f"{name}_bn2")(y)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def apply_bireal_unit(x, m, filters, *, stride, name):
    """One Bi-Real unit: conv(3x3) -> PReLU -> BN, plus an identity (or downsampling) shortcut.

    The downsampling shortcut (where the stride or the channels change) is 2x2 average
    pooling, a full-precision 1x1 conv and BN, as in Bi-Real Net. Arguments as
    `apply_basic_block`'s, less `feeds_quantized`.
    """
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        if stride != 1:
            shortcut = keras.layers.AveragePooling2D(stride, name=f"{name}_down_pool")(shortcut)
        shortcut = m.conv2d(filters, 1, name=f"{name}_down_conv", quantized=False)(shortcut)
        shortcut = m.batch_norm(name=f"{name}_down_bn", after_quantized=False)(shortcut)
    y = m.conv2d(filters, 3, strides=stride, name=f"{name}_conv")(x)
    y = m.prelu(y, name=f"{name}_prelu")
    y = m.batch_norm(name=f"{name}_bn")(y)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def apply_bireal_block(x, m, filters, *, stride, name, feeds_quantized=True):
    """Two Bi-Real units (a ResNet basic block with a shortcut around each conv).

    Same arguments as `apply_basic_block` (`feeds_quantized` is unused: no activation
    follows the additions).
    """
    del feeds_quantized
    x = apply_bireal_unit(x, m, filters, stride=stride, name=f"{name}_unit1")
    return apply_bireal_unit(x, m, filters, stride=1, name=f"{name}_unit2")


def apply_stem_norm(x, m, *, prelu):
    """After the stem conv: PReLU -> BN (the authors' blocks), else BN -> activation."""
    if prelu:
        x = m.prelu(x, name="stem_prelu")
        return m.batch_norm(name="stem_bn", after_quantized=False)(x)
    x = m.batch_norm(name="stem_bn", after_quantized=False)(x)
    return m.activation(x, name="stem_relu")


def apply_stages(x, m, stage_filters, stage_strides, blocks_per_stage, apply_block=apply_basic_block):
    """Stacks the residual stages of `apply_block`; blocks are named stage{i}_block{j}."""
    for stage, (filters, stride) in enumerate(zip(stage_filters, stage_strides), start=1):
        for block in range(1, blocks_per_stage + 1):
            last = stage == len(stage_filters) and block == blocks_per_stage
            x = apply_block(
                x,
                m,
                filters,
                stride=stride if block == 1 else 1,
                name=f"stage{stage}_block{block}",
                feeds_quantized=not last,
            )
    return x


def resnet20(
    *,
    method="slb",
    wbits=1,
    abits=1,
    input_shape=(32, 32, 3),
    num_classes=10,
    width_multiplier=1.0,
    activation_quantizer="pact",
    block="convprelubn",
    sbn=True,
    sync_bn=False,
    ste_clip=False,
    logits_init="random",
    input_normalization=None,
    name="resnet20",
):
    """Builds the CIFAR ResNet-20 as a Keras functional model (logits output).

    Args:
        method: "slb" (default), "ste" or "fp" (see `models.method.Method`).
        wbits: weight bits of the quantized convs, 1 to 8.
        abits: activation bits at their inputs, 1 to 16 or 32.
        input_shape: (height, width, channels); height and width >= 8.
        num_classes: size of the (full-precision) classifier, >= 2.
        width_multiplier: scales every conv's filters (1.0 = 16/32/64).
        activation_quantizer: "pact" (default, the paper's ResNet recipe) or
            "dorefa", for abits 2..8.
        block: "convprelubn" (default, the authors'), "standard" or "bireal" (see
            the module docstring).
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
        A `keras.Model` (not compiled): stem_conv, stem_bn, stage{1..3}_block{1..3}_*,
        pool, fc.

    Raises:
        ValueError: for an argument out of range, naming it.

    Example:

    >>> model = resnet20(method="slb", wbits=2, abits=2, width_multiplier=0.5)
    >>> model(np.zeros((1, 32, 32, 3), "float32")).shape
    TensorShape([1, 10])
    >>> len(slb_keras.slb_layers(model))  # 18 convs in the blocks + 2 shortcuts
    20
    >>> [layer.name for layer in model.layers[4:7]]
    ['stage1_block1_conv1', 'stage1_block1_prelu1', 'stage1_block1_bn1']
    >>> bireal = resnet20(method="slb", wbits=1, abits=1, block="bireal")
    >>> len(slb_keras.slb_layers(bireal))  # the 18 3x3 convs; shortcuts are real-valued
    18
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
    filters = [method_lib.scaled_filters(f, width_multiplier) for f in STAGE_FILTERS]

    inputs, x = method_lib.model_input(input_shape, input_normalization)
    x = m.conv2d(filters[0], 3, name="stem_conv", quantized=False)(x)
    x = apply_stem_norm(x, m, prelu=block != "standard")
    apply_block = {
        "convprelubn": apply_convprelubn_block,
        "standard": apply_basic_block,
        "bireal": apply_bireal_block,
    }[block]
    x = apply_stages(x, m, filters, STAGE_STRIDES, BLOCKS_PER_STAGE, apply_block)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = m.dense(num_classes, name="fc", quantized=False, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
