"""The editable install cannot be shadowed by a folder named like the package.

`pip install -e .` of the src layout puts `src/` on sys.path through a .pth file, and
a regular package anywhere on the path wins over a namespace package: a script next to
a folder called `slb_keras` (typically the clone itself, seen from its parent folder)
imports the installed library. (The finder-based editable install of a flat layout lost
to that folder: an empty namespace package, then FileNotFoundError for the digits.)
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_folder_named_slb_keras_beside_a_script_does_not_shadow_the_library(tmp_path):
    clone = tmp_path / "slb_keras"  # a clone folder named like the package, no __init__.py
    (clone / "models").mkdir(parents=True)
    (clone / "README.md").write_text("a clone\n")
    script = tmp_path / "use.py"
    script.write_text(textwrap.dedent("""
        import slb_keras
        from slb_keras.datasets import load_digits
        (x_train, _), _ = load_digits()
        print(slb_keras.__file__, x_train.shape[0])
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the install provides
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    path, count = done.stdout.split()
    assert path == os.path.join(ROOT, "src", "slb_keras", "__init__.py") and int(count) > 1000
