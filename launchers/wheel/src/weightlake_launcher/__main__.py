"""`python -m weightlake_launcher ARGS...`, same as the console script."""

from weightlake_launcher import main

main()
