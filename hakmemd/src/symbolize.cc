#include "symbolize.h"

#include <cxxabi.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace hakmemd {

namespace {

constexpr size_t kMaxCachedModules = 256;

std::string hex(uint64_t v) {
  char b[24];
  snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

std::string basename_of(const std::string& p) {
  const size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

std::string demangle(const std::string& name) {
  if (name.rfind("_Z", 0) != 0) return name;
  int status = 0;
  char* d = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  std::string out = status == 0 && d ? d : name;
  free(d);
  return out;
}

bool is_file_path(const std::string& p) { return !p.empty() && p[0] == '/'; }

// The distinct file-backed executable modules, in map order (the executable first).
std::vector<std::string> exec_modules(const std::vector<Mapping>& maps) {
  std::vector<std::string> paths;
  for (const Mapping& m : maps)
    if (m.exec && is_file_path(m.path) && std::find(paths.begin(), paths.end(), m.path) == paths.end())
      paths.push_back(m.path);
  return paths;
}

}  // namespace

bool parse_offset(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  int base = 10;
  size_t i = 0;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    i = 2;
  }
  uint64_t v = 0;
  for (; i < s.size(); i++) {
    const char c = s[i];
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (base == 16 && c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return false;
    v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

bool site_names_function(const std::string& spec) {
  uint64_t a;
  if (spec.empty() || (spec.rfind("0x", 0) == 0 && parse_offset(spec, &a))) return false;
  const size_t plus = spec.rfind('+');
  return plus == std::string::npos || plus == 0;
}

bool read_maps(pid_t pid, std::vector<Mapping>* out, std::string* error) {
  const std::string path = "/proc/" + std::to_string(pid) + "/maps";
  std::ifstream f(path);
  if (!f) {
    *error = "cannot read " + path + ": " + strerror(errno);
    return false;
  }
  out->clear();
  std::string line;
  while (std::getline(f, line)) {
    // start-end perms offset dev inode [path]
    Mapping m;
    unsigned long long start, end, off;
    char perms[8] = {};
    int consumed = 0;
    if (sscanf(line.c_str(), "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &off, &consumed) < 4) continue;
    m.start = start;
    m.end = end;
    m.offset = off;
    m.exec = perms[2] == 'x';
    if (consumed > 0 && static_cast<size_t>(consumed) < line.size()) m.path = line.substr(static_cast<size_t>(consumed));
    while (!m.path.empty() && m.path.back() == ' ') m.path.pop_back();
    out->push_back(std::move(m));
  }
  return true;
}

bool ElfModule::load(const std::string& path, std::string* error) {
  elf_version(EV_CURRENT);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot open " + path + ": " + strerror(errno);
    return false;
  }
  Elf* elf = elf_begin(fd, ELF_C_READ_MMAP, nullptr);
  if (!elf || elf_kind(elf) != ELF_K_ELF) {
    *error = path + " is not an ELF file" + (elf ? "" : std::string(": ") + elf_errmsg(-1));
    if (elf) elf_end(elf);
    close(fd);
    return false;
  }
  size_t nph = 0;
  if (elf_getphdrnum(elf, &nph) == 0) {
    for (size_t i = 0; i < nph; i++) {
      GElf_Phdr ph;
      if (gelf_getphdr(elf, static_cast<int>(i), &ph) && ph.p_type == PT_LOAD)
        loads_.push_back({ph.p_offset, ph.p_vaddr, ph.p_filesz, ph.p_memsz});
    }
  }
  Elf_Scn* scn = nullptr;
  while ((scn = elf_nextscn(elf, scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh) || (sh.sh_type != SHT_SYMTAB && sh.sh_type != SHT_DYNSYM) || sh.sh_entsize == 0)
      continue;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (!data) continue;
    const size_t n = sh.sh_size / sh.sh_entsize;
    for (size_t i = 0; i < n; i++) {
      GElf_Sym s;
      if (!gelf_getsym(data, static_cast<int>(i), &s)) continue;
      const int type = GELF_ST_TYPE(s.st_info);
      if ((type != STT_FUNC && type != STT_GNU_IFUNC) || s.st_shndx == SHN_UNDEF || s.st_value == 0) continue;
      const char* name = elf_strptr(elf, sh.sh_link, s.st_name);
      if (!name || !*name) continue;
      ElfSymbol e;
      e.value = s.st_value;
      e.size = s.st_size;
      e.name = name;
      e.demangled = demangle(e.name);
      syms_.push_back(std::move(e));
    }
  }
  elf_end(elf);
  close(fd);
  std::sort(syms_.begin(), syms_.end(), [](const ElfSymbol& a, const ElfSymbol& b) {
    return a.value != b.value ? a.value < b.value : a.name < b.name;
  });
  // .symtab and .dynsym repeat exported functions: keep one of each.
  syms_.erase(std::unique(syms_.begin(), syms_.end(),
                          [](const ElfSymbol& a, const ElfSymbol& b) { return a.value == b.value && a.name == b.name; }),
              syms_.end());
  if (loads_.empty()) {
    *error = path + " has no loadable segments";
    return false;
  }
  return true;
}

bool ElfModule::file_to_vaddr(uint64_t off, uint64_t* vaddr) const {
  for (const Load& l : loads_)
    if (off >= l.offset && off < l.offset + l.filesz) {
      *vaddr = l.vaddr + (off - l.offset);
      return true;
    }
  return false;
}

bool ElfModule::vaddr_to_file(uint64_t vaddr, uint64_t* off) const {
  for (const Load& l : loads_)
    if (vaddr >= l.vaddr && vaddr < l.vaddr + l.filesz) {
      *off = l.offset + (vaddr - l.vaddr);
      return true;
    }
  return false;
}

const ElfSymbol* ElfModule::containing(uint64_t vaddr) const {
  auto it = std::upper_bound(syms_.begin(), syms_.end(), vaddr,
                             [](uint64_t v, const ElfSymbol& s) { return v < s.value; });
  if (it == syms_.begin()) return nullptr;
  --it;
  // Prefer a sized symbol that covers the address among aliases at the same value.
  for (auto j = it;; --j) {
    if (j->value != it->value) break;
    if (j->size && vaddr < j->value + j->size) return &*j;
    if (j == syms_.begin()) break;
  }
  return it->size == 0 ? &*it : nullptr;
}

const ElfSymbol* ElfModule::find(const std::string& name) const {
  const ElfSymbol* best = nullptr;
  for (const ElfSymbol& s : syms_) {
    bool match = s.name == name || s.demangled == name;
    if (!match && s.demangled != s.name) {
      const size_t paren = s.demangled.find('(');
      match = paren != std::string::npos && s.demangled.compare(0, paren, name) == 0 && paren == name.size();
    }
    if (match && (!best || (best->size == 0 && s.size != 0))) best = &s;
  }
  return best;
}

std::string Symbolized::text() const {
  if (module.empty()) return hex(addr);
  if (function.empty()) return basename_of(module) + "+" + hex(module_offset);
  return function + "+" + hex(function_offset) + " (" + basename_of(module) + ")";
}

std::string Symbolized::spec() const {
  if (module.empty()) return hex(addr);
  if (function.empty()) return basename_of(module) + "+" + hex(module_offset);
  return function + "+" + hex(function_offset);
}

std::shared_ptr<ElfModule> Symbolizer::module(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return nullptr;
  const std::string key = path + '\0' + std::to_string(st.st_ino) + '\0' + std::to_string(st.st_mtim.tv_sec) + "." +
                          std::to_string(st.st_mtim.tv_nsec);
  if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  if (failed_.count(key)) return nullptr;
  if (cache_.size() >= kMaxCachedModules) cache_.clear();
  if (failed_.size() >= kMaxCachedModules) failed_.clear();
  auto m = std::make_shared<ElfModule>();
  std::string err;
  if (!m->load(path, &err)) {
    failed_[key] = err;
    return nullptr;
  }
  cache_[key] = m;
  return m;
}

Symbolized Symbolizer::symbolize(const std::vector<Mapping>& maps, uint64_t addr) {
  Symbolized s;
  s.addr = addr;
  for (const Mapping& m : maps) {
    if (addr < m.start || addr >= m.end) continue;
    if (!is_file_path(m.path)) break;
    s.module = m.path;
    const uint64_t file_off = addr - m.start + m.offset;
    auto mod = module(m.path);
    if (!mod || !mod->file_to_vaddr(file_off, &s.module_offset)) {
      s.module_offset = file_off;
      break;
    }
    if (const ElfSymbol* sym = mod->containing(s.module_offset)) {
      s.function = sym->demangled;
      s.function_offset = s.module_offset - sym->value;
    }
    break;
  }
  return s;
}

bool Symbolizer::runtime_addr(const std::vector<Mapping>& maps, const std::string& path, const ElfModule& m,
                              uint64_t vaddr, uint64_t* out) {
  uint64_t off;
  if (!m.vaddr_to_file(vaddr, &off)) return false;
  for (const Mapping& mp : maps) {
    if (mp.path != path) continue;
    if (off >= mp.offset && off < mp.offset + (mp.end - mp.start)) {
      *out = mp.start + (off - mp.offset);
      return true;
    }
  }
  return false;
}

bool Symbolizer::resolve(const std::vector<Mapping>& maps, const std::string& spec,
                         const std::vector<uint64_t>& sampled, std::vector<uint64_t>* out, std::string* error) {
  out->clear();
  if (spec.empty()) {
    *error = "empty site";
    return false;
  }
  // A plain address.
  uint64_t a;
  if (spec.rfind("0x", 0) == 0 && parse_offset(spec, &a)) {
    for (const Mapping& m : maps)
      if (a >= m.start && a < m.end && m.exec) {
        out->push_back(a);
        return true;
      }
    *error = "address " + spec + " is not in an executable mapping of the process";
    return false;
  }
  std::string name = spec;
  uint64_t off = 0;
  bool has_off = false;
  if (const size_t plus = spec.rfind('+'); plus != std::string::npos && plus > 0) {
    if (!parse_offset(spec.substr(plus + 1), &off)) {
      *error = "bad offset in site '" + spec + "' (want 0xHEX or decimal after '+')";
      return false;
    }
    name = spec.substr(0, plus);
    has_off = true;
  }
  if (!has_off) {
    // A bare function name: every sampled call site inside it.
    if (!function_sites(maps, name, sampled, out, error)) return false;
    if (out->empty()) {
      *error = "no sampled call site inside " + name + " yet: a rule matches a call site (a return address); "
               "give " + name + "+0xOFF as `hakctl sites` shows it, or let the process run with site.rules=1 first";
      return false;
    }
    return true;
  }
  const std::vector<std::string> paths = exec_modules(maps);
  // module+offset: a module named by path or base name.
  for (const std::string& p : paths) {
    if (p != name && basename_of(p) != name) continue;
    auto mod = module(p);
    if (!mod) {
      *error = "cannot read the symbols of " + p;
      return false;
    }
    if (!runtime_addr(maps, p, *mod, off, &a)) {
      *error = "offset " + hex(off) + " is outside the loaded parts of " + p;
      return false;
    }
    out->push_back(a);
    return true;
  }
  // symbol+offset: the first module (in map order) that defines it.
  for (const std::string& p : paths) {
    auto mod = module(p);
    if (!mod) continue;
    const ElfSymbol* sym = mod->find(name);
    if (!sym) continue;
    if (sym->size && off >= sym->size) {
      *error = "offset " + hex(off) + " is past the end of " + name + " (" + std::to_string(sym->size) + " bytes)";
      return false;
    }
    if (!runtime_addr(maps, p, *mod, sym->value + off, &a)) {
      *error = name + " in " + p + " is not mapped";
      return false;
    }
    out->push_back(a);
    return true;
  }
  *error = "unknown symbol '" + name + "': no function of that name (and no module of that name) in process's "
           "executable mappings";
  return false;
}

bool Symbolizer::function_sites(const std::vector<Mapping>& maps, const std::string& name,
                                const std::vector<uint64_t>& sampled, std::vector<uint64_t>* out, std::string* error) {
  out->clear();
  // The first module (in map order) that defines it.
  for (const std::string& p : exec_modules(maps)) {
    auto mod = module(p);
    if (!mod) continue;
    const ElfSymbol* sym = mod->find(name);
    if (!sym) continue;
    uint64_t lo;
    if (!runtime_addr(maps, p, *mod, sym->value, &lo)) {
      *error = name + " in " + p + " is not mapped";
      return false;
    }
    const uint64_t hi = lo + (sym->size ? sym->size : 1);
    for (uint64_t s : sampled)
      if (s >= lo && s < hi) out->push_back(s);
    std::sort(out->begin(), out->end());
    return true;
  }
  *error = "unknown symbol '" + name + "': no function of that name (and no module with an offset) in process's "
           "executable mappings";
  return false;
}

}  // namespace hakmemd
