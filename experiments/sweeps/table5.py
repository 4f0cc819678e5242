"""Paper Table 5: the ICA partitions of a MANGO block (MMCA, +IMCA, +LICA) on NYUDv2 and
SUN RGB-D, with the MANGO flow layer, 12 blocks and the latent model."""

from experiments.sweeps import paper_trials

PARTITIONS = ("mmca", "mmca+imca", "mmca+imca+lica")


def get_trials():
    return paper_trials(partitions=PARTITIONS)
