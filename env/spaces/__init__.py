"""Search spaces: the YAML files that list a network's decisions (``*.yaml`` here, shipped with the package), the
token protocol over them (:mod:`.space`), the network families that say what a space may decide and build its
networks (:mod:`.family`, the base class and the registry; one module per shipped family in :mod:`.families`),
and the torch modules they build (:mod:`.networks`, :mod:`.rnn`, :mod:`.nb201_cell`; shared weights for a whole
space: :mod:`.supernet`)."""
