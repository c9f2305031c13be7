"""Search spaces: the YAML files that list a network's decisions (``*.yaml`` here, shipped with the package), the
token protocol over them (:mod:`.space`), and the networks their architectures build (:mod:`.networks`,
:mod:`.rnn`, :mod:`.nb201_cell`; shared weights for a whole space: :mod:`.supernet`)."""
