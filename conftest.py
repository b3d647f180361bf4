"""Names available to the docstring examples (pytest --doctest-modules)."""

import keras
import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(autouse=True)
def _doctest_names(request, doctest_namespace, tmp_path, monkeypatch):
    import slb_keras

    doctest_namespace.update(np=np, keras=keras, tf=tf, slb_keras=slb_keras)
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(tmp_path)  # examples that write files write them here
