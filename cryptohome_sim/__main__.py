"""``python -m cryptohome_sim``: the ``cryptohome-sim`` command."""

from cryptohome_sim.cli import main

if __name__ == "__main__":
    main()
