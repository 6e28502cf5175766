"""Neural networks: cells behind one interface, one unroller, the language model, recurrent initialisation."""

from rnnlab.nn.cells import CELL_TYPES, Cell, ElmanCell, GRUCell, LSTMCell, State
from rnnlab.nn.init import init_recurrent
from rnnlab.nn.models import RNNLanguageModel, sequence_loss
from rnnlab.nn.stack import RecurrentStack, StackState, detach_state

__all__ = ["CELL_TYPES", "Cell", "ElmanCell", "GRUCell", "LSTMCell", "RNNLanguageModel", "RecurrentStack", "State",
           "StackState", "detach_state", "init_recurrent", "sequence_loss"]
