"""The shipped network families, one module each (:mod:`.conv`: ``cnn1d`` and ``cnn2d``; :mod:`.mlp`;
:mod:`.rnn_cell`: ENAS's cell and the standard cells; :mod:`.nb201_cell`; :mod:`.table`: a lookup table's rows,
which builds no network). The base class and the registry that finds them by name are in
:mod:`nasrl.env.spaces.family`."""
