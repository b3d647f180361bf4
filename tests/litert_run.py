"""Running a .tflite file on a batch with the LiteRT interpreter (the export tests' helper)."""

import os

from ai_edge_litert.interpreter import Interpreter


def run_tflite(path, x, num_threads=None):
    """The first output of the TFLite model at `path` for the batch `x` (input resized to it)."""
    interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
