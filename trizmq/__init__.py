"""trizmq: RPC on ZeroMQ with Trio's structured concurrency."""

from ._client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._client import DEFAULT_WINDOW as DEFAULT_WINDOW
from ._client import BoundTarget as BoundTarget
from ._client import Client as Client
from ._client import open_client as open_client
from ._context import Context as Context
from ._curve import Curve as Curve
from ._errors import AuthenticationFailed as AuthenticationFailed
from ._errors import BadArguments as BadArguments
from ._errors import CallTimeout as CallTimeout
from ._errors import MessageTooLarge as MessageTooLarge
from ._errors import NoSuchMethod as NoSuchMethod
from ._errors import PeerLost as PeerLost
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteError as RemoteError
from ._errors import RingError as RingError
from ._errors import ServiceShutdown as ServiceShutdown
from ._errors import TrizmqError as TrizmqError
from ._metrics import serve_metrics as serve_metrics
from ._ring import Ring as Ring
from ._ring import Service as Service
from ._ring import parse_resolve as parse_resolve
from ._ring import resolve_address as resolve_address
from ._service import serve as serve
