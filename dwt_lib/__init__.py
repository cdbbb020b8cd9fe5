"""dwt_lib: the library of the DWT companion (notebooks and the ``dwt`` command only call it).

Its folders are layers, in the order data flows::

    core < config < data | models < runs < train < studies < notebook < app (cli, reproduce, lab)

The import rule (README "Layout"; enforced by ``tests/test_layers.py``, which reads every module's imports):

- a module imports only its own package and lower layers; ``data`` and ``models`` never import each other;
- no ``dwt_lib`` import inside a function (heavy third-party libraries such as torch may be imported lazily);
- no import circle, package faces (``__init__.py``) included;
- ``import dwt_lib.config`` loads neither torch nor transformers.

A name a lower layer needs lives in that layer (tables a profile is checked against are plain data in
``config/``; every exception type is in ``core/errors.py``), never reached for upwards. This file imports nothing.
"""
