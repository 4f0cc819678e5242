"""Paper Table 4: the invertible layer of G (RealNVP, Glow, Flow++, AttnFlow, MANGO's ICA) on
NYUDv2 and SUN RGB-D, with 12 blocks, all three partitions and the latent model."""

from experiments.sweeps import paper_trials

FLOWS = ("realnvp", "glow", "flowpp", "attnflow", "mango")


def get_trials():
    return paper_trials(flow=FLOWS)
