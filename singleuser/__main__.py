"""``python -m singleuser`` — same as the ``himalia-singleuser`` console script."""

from singleuser.app import main

if __name__ == "__main__":
    main()
