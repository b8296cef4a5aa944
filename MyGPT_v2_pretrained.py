"""Complete your sentences with OpenAI's GPT-2, loaded into MyGPT's from-scratch model.

The seed's second script, kept as it was: the same flags, output and exit codes as `mygpt chat`
(mygpt/cli/chat.py), where the program lives.
"""

from mygpt.cli.chat import main
from mygpt.cli.common import run_main

if __name__ == "__main__":
    run_main(main)
