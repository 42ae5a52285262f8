// The pybind11 module under the `cistern` Python package: a thin layer over
// the C++ client (include/cistern/client.h). Values cross as buffers; the pure
// Python side (cistern/__init__.py) builds numpy arrays and torch tensors over
// them; cistern/stream.py wraps the Stream binding (include/cistern/stream.h),
// whose refs cross as plain tuples. Every call that talks to the daemon
// releases the GIL. Errors become cistern.Error carrying the absl status code,
// which __init__.py maps to the Python exception types (KeyError, MemoryError,
// ...).
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "include/cistern/client.h"
#include "include/cistern/stream.h"

namespace py = pybind11;
using cistern::Client;
using cistern::GetOptions;
using cistern::ObjectView;

namespace {

py::object g_error;  // cistern._cistern.Error

[[noreturn]] void Raise(const absl::Status& s) {
  py::object e = g_error(static_cast<int>(s.code()), std::string(s.message()));
  PyErr_SetObject(g_error.ptr(), e.ptr());
  throw py::error_already_set();
}

template <typename T>
T Check(absl::StatusOr<T> v) {
  if (!v.ok()) Raise(v.status());
  return std::move(*v);
}

// A leased view; exposes its bytes through the buffer protocol (read-only).
// Python objects built over the buffer keep it, and so the lease, alive.
// A manifest as Python dicts: name, dtype (its name), shape, offset, nbytes.
std::vector<py::dict> TensorDicts(const std::vector<cistern::TensorInfo>& tensors) {
  std::vector<py::dict> out;
  for (const auto& t : tensors) {
    py::dict d;
    d["name"] = t.name;
    d["dtype"] = std::string(cistern::DTypeName(t.dtype));
    d["shape"] = t.shape;
    d["offset"] = t.offset;
    d["nbytes"] = t.nbytes;
    out.push_back(d);
  }
  return out;
}

struct View {
  ObjectView view;
  std::vector<py::dict> tensors() const { return TensorDicts(view.tensors()); }
};

// This process's writable version of a view's bytes (ObjectView::MakePrivate);
// torch tensors are built over it. It keeps the view, and so the lease, alive.
struct Private {
  std::shared_ptr<View> view;
  cistern::PrivateBytes bytes;
};

// A pending write; its buffer is writable until Seal or Abort.
struct PendingWrite {
  cistern::Writer writer;
};

// Seconds from Python as milliseconds for the wire: NaN and negatives are 0,
// huge values (inf included) saturate instead of overflowing; the daemon
// clamps waits to its own maximum.
std::chrono::milliseconds Millis(double seconds) {
  constexpr double kMaxMs = 1e15;  // ~31,000 years; far below INT64_MAX (kMaxWait clamps further)
  if (!(seconds > 0)) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(static_cast<int64_t>(std::min(seconds * 1000, kMaxMs)));
}

cistern::PutOptions Options(bool evictable, bool if_absent, double timeout, bool checksum,
                            bool local_only = false, double wait_published = 0) {
  cistern::PutOptions o;
  o.local_only = local_only;
  o.wait_published = Millis(wait_published);
  o.evictable = evictable;
  o.if_absent = if_absent;
  o.wait = Millis(timeout);
  o.checksum = checksum;
  return o;
}

// tensors: list of (name, dtype name, shape, contiguous buffer). `keep` holds
// the buffers (and so the bytes the inputs point at) while they are used.
std::vector<cistern::TensorInput> TensorsFromPy(const py::list& tensors,
                                                std::vector<py::buffer_info>* keep) {
  std::vector<cistern::TensorInput> in;
  keep->reserve(tensors.size());
  for (const py::handle& item : tensors) {
    auto t = item.cast<py::tuple>();
    cistern::TensorInput ti;
    ti.name = t[0].cast<std::string>();
    std::string dtype = t[1].cast<std::string>();
    auto d = cistern::DTypeFromName(dtype);
    if (!d) {
      Raise(absl::InvalidArgumentError("tensor '" + ti.name + "' has unsupported dtype " + dtype));
    }
    ti.dtype = *d;
    ti.shape = t[2].cast<std::vector<uint64_t>>();
    keep->push_back(t[3].cast<py::buffer>().request());
    ti.data = std::span<const std::byte>(static_cast<const std::byte*>(keep->back().ptr),
                                         keep->back().size * keep->back().itemsize);
    in.push_back(std::move(ti));
  }
  return in;
}

py::tuple Ref(const cistern::ObjectRef& r) { return py::make_tuple(r.key, r.generation, r.size); }

// A wire message as a dict, field for field (proto field names): integers,
// floats, bools and strings as themselves, enums as their value names, an
// unset optional as None, repeated fields as lists, maps as dicts, messages
// as dicts. Every report the daemon sends reaches Python this way, so a field
// added to a proto needs no code here.
py::object ProtoToPy(const google::protobuf::Message& m);

py::object FieldToPy(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f,
                     int i) {
  using F = google::protobuf::FieldDescriptor;
  const auto* r = m.GetReflection();
  const bool rep = i >= 0;
  switch (f->cpp_type()) {
    case F::CPPTYPE_INT32:
      return py::int_(rep ? r->GetRepeatedInt32(m, f, i) : r->GetInt32(m, f));
    case F::CPPTYPE_INT64:
      return py::int_(rep ? r->GetRepeatedInt64(m, f, i) : r->GetInt64(m, f));
    case F::CPPTYPE_UINT32:
      return py::int_(rep ? r->GetRepeatedUInt32(m, f, i) : r->GetUInt32(m, f));
    case F::CPPTYPE_UINT64:
      return py::int_(rep ? r->GetRepeatedUInt64(m, f, i) : r->GetUInt64(m, f));
    case F::CPPTYPE_DOUBLE:
      return py::float_(rep ? r->GetRepeatedDouble(m, f, i) : r->GetDouble(m, f));
    case F::CPPTYPE_FLOAT:
      return py::float_(rep ? r->GetRepeatedFloat(m, f, i) : r->GetFloat(m, f));
    case F::CPPTYPE_BOOL:
      return py::bool_(rep ? r->GetRepeatedBool(m, f, i) : r->GetBool(m, f));
    case F::CPPTYPE_ENUM:
      return py::str((rep ? r->GetRepeatedEnum(m, f, i) : r->GetEnum(m, f))->name());
    case F::CPPTYPE_STRING:
      return py::str(rep ? r->GetRepeatedString(m, f, i) : r->GetString(m, f));
    case F::CPPTYPE_MESSAGE:
      return ProtoToPy(rep ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f));
  }
  return py::none();
}

py::object ProtoToPy(const google::protobuf::Message& m) {
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  py::dict out;
  for (int k = 0; k < d->field_count(); ++k) {
    const auto* f = d->field(k);
    py::str name(f->name());
    if (f->is_map()) {
      py::dict map;
      const auto* key = f->message_type()->map_key();
      const auto* value = f->message_type()->map_value();
      for (int i = 0; i < r->FieldSize(m, f); ++i) {
        const auto& entry = r->GetRepeatedMessage(m, f, i);
        map[FieldToPy(entry, key, -1)] = FieldToPy(entry, value, -1);
      }
      out[name] = map;
    } else if (f->is_repeated()) {
      py::list list;
      for (int i = 0; i < r->FieldSize(m, f); ++i) list.append(FieldToPy(m, f, i));
      out[name] = list;
    } else if (f->has_presence() &&
               f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE &&
               !r->HasField(m, f)) {
      out[name] = py::none();
    } else {
      out[name] = FieldToPy(m, f, -1);
    }
  }
  return out;
}

// An object's stat: the wire fields, with checksum None when it has none.
py::object Info(const cistern::ObjectInfo& o) {
  py::dict d = ProtoToPy(o);
  PyDict_DelItemString(d.ptr(), "has_checksum");
  d["checksum"] = o.has_checksum() ? py::object(py::int_(o.checksum())) : py::none();
  return d;
}

// ---- streams ----

// A Stream with the Client it borrows: the Python object keeps the Client alive.
struct PyStream {
  std::shared_ptr<Client> client;
  std::optional<cistern::Stream> stream;
};

// A ref crosses as the tuple (sample_id, key, generation, nbytes,
// [(name, dtype name, shape)], {metadata}, lease_id, deliveries); the last two
// may be left out. The Python side checks types before calling in.
cistern::SampleRef RefFromPy(const py::handle& h) {
  auto t = h.cast<py::sequence>();
  if (t.size() < 6) throw py::value_error("a sample ref has at least 6 fields");
  cistern::SampleRef r;
  r.sample_id = t[0].cast<std::string>();
  r.key = t[1].cast<std::string>();
  r.generation = t[2].cast<uint64_t>();
  r.nbytes = t[3].cast<uint64_t>();
  for (const py::handle& f : t[4].cast<py::sequence>()) {
    auto ft = f.cast<py::sequence>();
    cistern::FeatureSpec spec;
    spec.name = ft[0].cast<std::string>();
    std::string dtype = ft[1].cast<std::string>();
    auto d = cistern::DTypeFromName(dtype);
    if (!d) {
      Raise(absl::InvalidArgumentError("feature '" + spec.name + "' of sample '" + r.sample_id +
                                       "' has unknown dtype " + dtype));
    }
    spec.dtype = *d;
    spec.shape = ft[2].cast<std::vector<uint64_t>>();
    r.features.push_back(std::move(spec));
  }
  r.metadata = t[5].cast<std::map<std::string, std::string>>();
  if (t.size() > 6) r.lease_id = t[6].cast<uint64_t>();
  if (t.size() > 7) r.deliveries = t[7].cast<uint32_t>();
  return r;
}

std::vector<cistern::SampleRef> RefsFromPy(const py::sequence& refs) {
  std::vector<cistern::SampleRef> out;
  out.reserve(refs.size());
  for (const py::handle& h : refs) out.push_back(RefFromPy(h));
  return out;
}

py::tuple RefToPy(const cistern::SampleRef& r) {
  py::list features;
  for (const auto& f : r.features) {
    features.append(py::make_tuple(f.name, std::string(cistern::DTypeName(f.dtype)),
                                   py::tuple(py::cast(f.shape))));
  }
  return py::make_tuple(r.sample_id, r.key, r.generation, r.nbytes, features, py::cast(r.metadata),
                        r.lease_id, r.deliveries);
}

}  // namespace

PYBIND11_MODULE(_cistern, m) {
  m.doc() = "Cistern's native client; use the `cistern` package instead.";
  g_error = py::reinterpret_borrow<py::object>(
      PyErr_NewException("cistern._cistern.Error", PyExc_RuntimeError, nullptr));
  m.attr("Error") = g_error;

  py::class_<View, std::shared_ptr<View>>(m, "View", py::buffer_protocol())
      .def_property_readonly("key", [](const View& v) { return v.view.key(); })
      .def_property_readonly("generation", [](const View& v) { return v.view.generation(); })
      .def_property_readonly("nbytes", [](const View& v) { return v.view.size(); })
      .def_property_readonly(
          "address", [](const View& v) { return reinterpret_cast<uintptr_t>(v.view.data()); })
      .def_property_readonly("tensors", &View::tensors)
      .def_property_readonly("leased", [](const View& v) { return v.view.valid(); })
      .def("release",
           [](View& v) {
             if (!v.view.valid()) return;
             absl::Status s;
             {
               py::gil_scoped_release unlocked;
               s = v.view.Release();
             }
             if (!s.ok()) Raise(s);
           })
      .def("make_private",
           [](const std::shared_ptr<View>& v) {
             auto p = std::make_shared<Private>();
             p->view = v;
             p->bytes = Check(v->view.MakePrivate());
             return p;
           })
      .def_buffer([](View& v) -> py::buffer_info {
        if (!v.view.valid()) {
          throw py::value_error("the view of '" + v.view.key() + "' was released");
        }
        return py::buffer_info(const_cast<std::byte*>(v.view.data()), 1,
                               py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(v.view.size())}, {1}, /*readonly=*/true);
      });

  py::class_<Private, std::shared_ptr<Private>>(m, "Private", py::buffer_protocol())
      .def_property_readonly("mapped", [](const Private& p) { return p.bytes.mapped(); })
      .def_buffer([](Private& p) -> py::buffer_info {
        return py::buffer_info(p.bytes.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(p.bytes.size())}, {1},
                               /*readonly=*/false);
      });

  py::class_<PendingWrite, std::shared_ptr<PendingWrite>>(m, "PendingWrite", py::buffer_protocol())
      .def_property_readonly("key", [](const PendingWrite& w) { return w.writer.key(); })
      .def_property_readonly("nbytes", [](const PendingWrite& w) { return w.writer.size(); })
      .def_property_readonly("tensors",
                             [](const PendingWrite& w) { return TensorDicts(w.writer.tensors()); })
      .def("seal",
           [](PendingWrite& w) {
             absl::StatusOr<cistern::ObjectRef> r;
             {
               py::gil_scoped_release unlocked;
               r = w.writer.Seal();
             }
             return Ref(Check(std::move(r)));
           })
      .def("abort",
           [](PendingWrite& w) {
             if (w.writer.data() == nullptr) return;
             absl::Status s;
             {
               py::gil_scoped_release unlocked;
               s = w.writer.Abort();
             }
             if (!s.ok()) Raise(s);
           })
      .def_buffer([](PendingWrite& w) -> py::buffer_info {
        if (w.writer.data() == nullptr) throw py::value_error("the write was sealed or aborted");
        return py::buffer_info(w.writer.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(w.writer.size())}, {1},
                               /*readonly=*/false);
      });

  py::class_<Client, std::shared_ptr<Client>>(m, "Client")
      .def(py::init(
               [](const std::string& socket, const std::string& token, const std::string& name) {
                 cistern::ConnectOptions o;
                 o.socket_path = socket;
                 o.token = token;
                 o.client_name = name;
                 absl::StatusOr<std::unique_ptr<Client>> c;
                 {
                   py::gil_scoped_release unlocked;
                   c = Client::Connect(o);
                 }
                 return std::shared_ptr<Client>(Check(std::move(c)));
               }),
           py::arg("socket") = "", py::arg("token") = "", py::arg("name") = "python")
      .def_property_readonly("socket", &Client::socket_path)
      .def(
          "put_bytes",
          [](Client& c, const std::string& key, py::buffer value, bool evictable, bool if_absent,
             double timeout, bool checksum, bool local_only, double wait_published) {
            py::buffer_info b = value.request();  // the Python side passes contiguous buffers
            auto bytes = std::span<const std::byte>(static_cast<const std::byte*>(b.ptr),
                                                    static_cast<size_t>(b.size * b.itemsize));
            absl::StatusOr<cistern::ObjectRef> r;
            {
              py::gil_scoped_release unlocked;
              r = c.Put(
                  key, bytes,
                  Options(evictable, if_absent, timeout, checksum, local_only, wait_published));
            }
            return Ref(Check(std::move(r)));
          },
          py::arg("key"), py::arg("value"), py::arg("evictable") = false,
          py::arg("if_absent") = false, py::arg("timeout") = 0.0, py::arg("checksum") = true,
          py::arg("local_only") = false, py::arg("wait_published") = 0.0)
      .def(
          "put_tensors",
          // tensors: list of (name, dtype name, shape, contiguous buffer)
          [](Client& c, const std::string& key, const py::list& tensors, bool evictable,
             bool if_absent, double timeout, bool checksum, bool local_only,
             double wait_published) {
            std::vector<py::buffer_info> keep;
            std::vector<cistern::TensorInput> in = TensorsFromPy(tensors, &keep);
            absl::StatusOr<cistern::ObjectRef> r;
            {
              py::gil_scoped_release unlocked;
              r = c.PutTensors(
                  key, in,
                  Options(evictable, if_absent, timeout, checksum, local_only, wait_published));
            }
            return Ref(Check(std::move(r)));
          },
          py::arg("key"), py::arg("tensors"), py::arg("evictable") = false,
          py::arg("if_absent") = false, py::arg("timeout") = 0.0, py::arg("checksum") = true,
          py::arg("local_only") = false, py::arg("wait_published") = 0.0)
      .def(
          "get",
          [](Client& c, const std::string& key, uint64_t generation, bool local_only,
             double timeout, const std::string& prefer_host) {
            GetOptions o;
            o.generation = generation;
            o.local_only = local_only;
            o.deadline = Millis(timeout);
            o.prefer_host = prefer_host;
            absl::StatusOr<ObjectView> v;
            {
              py::gil_scoped_release unlocked;
              v = c.Get(key, o);
            }
            auto view = std::make_shared<View>();
            view->view = Check(std::move(v));
            return view;
          },
          py::arg("key"), py::arg("generation") = 0, py::arg("local_only") = false,
          py::arg("timeout") = 0.0, py::arg("prefer_host") = "")
      .def(
          "prefetch",
          [](Client& c, const std::vector<std::string>& keys) {
            absl::StatusOr<uint32_t> r;
            {
              py::gil_scoped_release unlocked;
              r = c.Prefetch(keys);
            }
            return Check(std::move(r));
          },
          py::arg("keys"))
      .def(
          "replicate",
          [](Client& c, const std::string& key, const std::vector<std::string>& to, bool all,
             uint64_t generation, uint32_t fanout, double timeout) {
            cistern::ReplicateOptions o;
            o.to = to;
            o.all = all;
            o.generation = generation;
            o.fanout = fanout;
            o.deadline = Millis(timeout);
            absl::StatusOr<cistern::ReplicateResult> r;
            {
              py::gil_scoped_release unlocked;
              r = c.Replicate(key, o);
            }
            cistern::ReplicateResult res = Check(std::move(r));
            py::list targets;
            for (const auto& t : res.targets) {
              py::dict d;
              d["host_id"] = t.host_id;
              d["ok"] = t.status.ok();
              d["code"] = absl::StatusCodeToString(t.status.code());
              d["message"] = std::string(t.status.message());
              d["already_held"] = t.already_held;
              d["upstream"] = t.upstream;
              py::dict received;
              for (const auto& [host, bytes] : t.sources) received[py::str(host)] = bytes;
              d["received"] = received;
              targets.append(d);
            }
            py::dict sent;
            for (const auto& [host, bytes] : res.bytes_sent) sent[py::str(host)] = bytes;
            py::dict out;
            out["key"] = res.key;
            out["generation"] = res.generation;
            out["targets"] = targets;
            out["bytes_sent"] = sent;
            return out;
          },
          py::arg("key"), py::arg("to") = std::vector<std::string>{}, py::arg("all") = false,
          py::arg("generation") = 0, py::arg("fanout") = 0, py::arg("timeout") = 0.0)
      .def(
          "create",
          [](Client& c, const std::string& key, uint64_t nbytes, bool evictable, bool if_absent,
             double timeout, bool checksum) {
            absl::StatusOr<cistern::Writer> w;
            {
              py::gil_scoped_release unlocked;
              w = c.Create(key, nbytes, Options(evictable, if_absent, timeout, checksum));
            }
            auto pw = std::make_shared<PendingWrite>();
            pw->writer = Check(std::move(w));
            return pw;
          },
          py::arg("key"), py::arg("nbytes"), py::arg("evictable") = false,
          py::arg("if_absent") = false, py::arg("timeout") = 0.0, py::arg("checksum") = true)
      .def(
          "create_tensors",
          // specs: list of (name, dtype name, shape)
          [](Client& c, const std::string& key, const py::list& specs, bool evictable,
             bool if_absent, double timeout, bool checksum) {
            std::vector<cistern::TensorSpec> in;
            for (const py::handle& item : specs) {
              auto t = item.cast<py::tuple>();
              cistern::TensorSpec ts;
              ts.name = t[0].cast<std::string>();
              std::string dtype = t[1].cast<std::string>();
              auto d = cistern::DTypeFromName(dtype);
              if (!d) {
                Raise(absl::InvalidArgumentError("tensor '" + ts.name + "' has unsupported dtype " +
                                                 dtype));
              }
              ts.dtype = *d;
              ts.shape = t[2].cast<std::vector<uint64_t>>();
              in.push_back(std::move(ts));
            }
            absl::StatusOr<cistern::Writer> w;
            {
              py::gil_scoped_release unlocked;
              w = c.CreateTensors(key, in, Options(evictable, if_absent, timeout, checksum));
            }
            auto pw = std::make_shared<PendingWrite>();
            pw->writer = Check(std::move(w));
            return pw;
          },
          py::arg("key"), py::arg("specs"), py::arg("evictable") = false,
          py::arg("if_absent") = false, py::arg("timeout") = 0.0, py::arg("checksum") = true)
      .def("get_many",
           // One round trip; a list of View or (code, message) per key.
           [](Client& c, const std::vector<std::string>& keys) {
             std::vector<absl::StatusOr<ObjectView>> views;
             {
               py::gil_scoped_release unlocked;
               views = c.GetMany(keys);
             }
             py::list out;
             for (auto& v : views) {
               if (!v.ok()) {
                 out.append(py::make_tuple(static_cast<int>(v.status().code()),
                                           std::string(v.status().message())));
                 continue;
               }
               auto view = std::make_shared<View>();
               view->view = std::move(*v);
               out.append(py::cast(view));
             }
             return out;
           })
      .def(
          "put_many",
          // items: list of (key, contiguous buffer); one round trip each way.
          [](Client& c, const py::list& items, bool evictable, bool if_absent, bool checksum) {
            std::vector<std::pair<std::string, std::span<const std::byte>>> in;
            std::vector<py::buffer_info> keep;
            for (const py::handle& item : items) {
              auto t = item.cast<py::tuple>();
              keep.push_back(t[1].cast<py::buffer>().request());
              in.push_back(
                  {t[0].cast<std::string>(),
                   std::span<const std::byte>(static_cast<const std::byte*>(keep.back().ptr),
                                              keep.back().size * keep.back().itemsize)});
            }
            std::vector<absl::StatusOr<cistern::ObjectRef>> refs;
            {
              py::gil_scoped_release unlocked;
              refs = c.PutMany(in, Options(evictable, if_absent, 0, checksum));
            }
            py::list out;
            for (auto& r : refs) {
              if (r.ok()) {
                out.append(Ref(*r));
              } else {
                out.append(py::make_tuple(static_cast<int>(r.status().code()),
                                          std::string(r.status().message())));
              }
            }
            return out;
          },
          py::arg("items"), py::arg("evictable") = false, py::arg("if_absent") = false,
          py::arg("checksum") = true)
      .def(
          "remove",
          [](Client& c, const std::string& key, uint64_t generation) {
            absl::StatusOr<uint64_t> g;
            {
              py::gil_scoped_release unlocked;
              g = c.Remove(key, generation);
            }
            return Check(std::move(g));
          },
          py::arg("key"), py::arg("generation") = 0)
      .def("stat",
           [](Client& c, const std::string& key) {
             absl::StatusOr<cistern::ObjectInfo> o;
             {
               py::gil_scoped_release unlocked;
               o = c.Stat(key);
             }
             return Info(Check(std::move(o)));
           })
      .def(
          "list",
          [](Client& c, const std::string& prefix) {
            py::list out;
            std::string cursor;
            do {
              absl::StatusOr<cistern::ListResult> page;
              {
                py::gil_scoped_release unlocked;
                page = c.List(prefix, 0, cursor);
              }
              auto p = Check(std::move(page));
              for (const auto& o : p.objects()) out.append(Info(o));
              cursor = p.next_cursor();
            } while (!cursor.empty());
            return out;
          },
          py::arg("prefix") = "")
      .def("stats", [](Client& c) {
        absl::StatusOr<cistern::DaemonStats> s;
        {
          py::gil_scoped_release unlocked;
          s = c.Stats();
        }
        return ProtoToPy(Check(std::move(s)));
      });

  py::class_<PyStream, std::shared_ptr<PyStream>>(m, "Stream")
      .def(py::init([](std::shared_ptr<Client> client, const std::string& name,
                       std::optional<uint64_t> lease_timeout_ms,
                       std::optional<uint64_t> high_watermark_bytes,
                       std::optional<uint64_t> low_watermark_bytes,
                       std::optional<uint32_t> max_in_flight_per_producer,
                       std::optional<uint32_t> max_lease_refs) {
             cistern::StreamOptions o;
             o.lease_timeout_ms = lease_timeout_ms;
             o.high_watermark_bytes = high_watermark_bytes;
             o.low_watermark_bytes = low_watermark_bytes;
             o.max_in_flight_per_producer = max_in_flight_per_producer;
             o.max_lease_refs = max_lease_refs;
             absl::StatusOr<cistern::Stream> s;
             {
               py::gil_scoped_release unlocked;
               s = cistern::Stream::Open(client.get(), name, o);
             }
             auto out = std::make_shared<PyStream>();
             out->stream.emplace(Check(std::move(s)));
             out->client = std::move(client);
             return out;
           }),
           py::arg("client"), py::arg("name"), py::arg("lease_timeout_ms") = py::none(),
           py::arg("high_watermark_bytes") = py::none(),
           py::arg("low_watermark_bytes") = py::none(),
           py::arg("max_in_flight_per_producer") = py::none(),
           py::arg("max_lease_refs") = py::none())
      .def_property_readonly("name", [](const PyStream& s) { return s.stream->name(); })
      .def(
          "commit",
          [](PyStream& s, const py::sequence& refs, double timeout, const std::string& producer) {
            auto in = RefsFromPy(refs);
            absl::StatusOr<cistern::CommitResult> r;
            {
              py::gil_scoped_release unlocked;
              r = s.stream->Commit(in, Millis(timeout), producer);
            }
            auto c = Check(std::move(r));
            return py::make_tuple(c.committed, c.duplicates);
          },
          py::arg("refs"), py::arg("timeout") = 0.0, py::arg("producer") = "")
      .def(
          "put",
          // Stream::Put: write if absent, then commit whatever is visible in
          // one step in the daemon; returns the held ref.
          [](PyStream& s, const std::string& sample_id, const py::list& tensors,
             const std::map<std::string, std::string>& metadata, double timeout,
             const std::string& producer) {
            std::vector<py::buffer_info> keep;
            std::vector<cistern::TensorInput> in = TensorsFromPy(tensors, &keep);
            cistern::SamplePutOptions o;
            o.metadata = metadata;
            o.wait = Millis(timeout);
            o.producer = producer;
            absl::StatusOr<cistern::SampleRef> r;
            {
              py::gil_scoped_release unlocked;
              r = s.stream->Put(sample_id, in, o);
            }
            return RefToPy(Check(std::move(r)));
          },
          py::arg("sample_id"), py::arg("tensors"), py::arg("metadata"), py::arg("timeout") = 0.0,
          py::arg("producer") = "")
      .def(
          "lease",
          [](PyStream& s, uint32_t max_refs, uint32_t min_refs, double timeout,
             std::optional<std::pair<uint32_t, uint32_t>> partition) {
            cistern::LeaseOptions o;
            o.max_refs = max_refs;
            o.min_refs = min_refs;
            o.wait = Millis(timeout);
            o.partition = partition;
            absl::StatusOr<std::vector<cistern::SampleRef>> r;
            {
              py::gil_scoped_release unlocked;
              r = s.stream->Lease(o);
            }
            py::list out;
            for (const auto& ref : Check(std::move(r))) out.append(RefToPy(ref));
            return out;
          },
          py::arg("max_refs"), py::arg("min_refs") = 1, py::arg("timeout") = 0.0,
          py::arg("partition") = py::none())
      .def(
          "ack",
          [](PyStream& s, const py::sequence& refs, std::optional<uint64_t> global_step,
             bool optimizer_durable) {
            auto in = RefsFromPy(refs);
            absl::StatusOr<cistern::AckResult> r;
            {
              py::gil_scoped_release unlocked;
              r = s.stream->Ack(in, global_step, optimizer_durable);
            }
            auto a = Check(std::move(r));
            return py::make_tuple(a.acked(), a.already(), a.released());
          },
          py::arg("refs"), py::arg("global_step") = py::none(),
          py::arg("optimizer_durable") = false)
      .def(
          "fail",
          [](PyStream& s, const py::sequence& refs, bool retryable) {
            auto in = RefsFromPy(refs);
            absl::StatusOr<cistern::FailResult> r;
            {
              py::gil_scoped_release unlocked;
              r = s.stream->Fail(in, retryable);
            }
            auto f = Check(std::move(r));
            return py::make_tuple(f.requeued(), f.dropped());
          },
          py::arg("refs"), py::arg("retryable") = true)
      .def("stat",
           [](PyStream& s) {
             absl::StatusOr<cistern::StreamInfo> r;
             {
               py::gil_scoped_release unlocked;
               r = s.stream->Stat();
             }
             return ProtoToPy(Check(std::move(r)));
           })
      .def("reconcile", [](PyStream& s) {
        absl::StatusOr<cistern::ReconcileResult> r;
        {
          py::gil_scoped_release unlocked;
          r = s.stream->Reconcile();
        }
        auto c = Check(std::move(r));
        return py::make_tuple(c.released(), c.requeued(), c.lost(), c.pending());
      });

  m.def("list_streams", [](std::shared_ptr<Client> client) {
    absl::StatusOr<std::vector<cistern::StreamInfo>> r;
    {
      py::gil_scoped_release unlocked;
      r = cistern::Stream::List(client.get());
    }
    py::list out;
    for (const auto& i : Check(std::move(r))) out.append(ProtoToPy(i));
    return out;
  });
  m.def("partition_of", &cistern::Stream::PartitionOf, py::arg("sample_id"), py::arg("count"));

  m.def("default_socket", &cistern::DefaultSocketPath);
  m.def(
      "discover_socket",
      [](const std::string& address) { return cistern::DiscoverSocket(address); },
      py::arg("address") = "");
}
