"""trizmq: RPC on ZeroMQ with Trio's structured concurrency."""

from ._errors import BadArguments as BadArguments
from ._errors import CallTimeout as CallTimeout
from ._errors import NoSuchMethod as NoSuchMethod
from ._errors import Overloaded as Overloaded
from ._errors import PeerLost as PeerLost
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteError as RemoteError
from ._errors import RingError as RingError
from ._errors import ServiceShutdown as ServiceShutdown
from ._errors import TrizmqError as TrizmqError
from ._ring import Ring as Ring
from ._ring import Service as Service
