"""Paper Tables 6 and 7 (appendix): 6, 8, 12 or 16 blocks, with and without the latent model, on
NYUDv2 and SUN RGB-D, with the MANGO flow layer and all three partitions."""

from experiments.sweeps import paper_trials

BLOCKS = (6, 8, 12, 16)


def get_trials():
    return paper_trials(blocks=BLOCKS, latent=(True, False))
