// Call-site addresses of a live process <-> `function+0xoff (module)`, from /proc/PID/maps and
// the modules' ELF symbol tables (elfutils' libelf). Module symbol tables are loaded once and
// cached by (path, inode, mtime), so many processes of one executable share them and a
// replaced file is read again.
//
// Offsets: `function+0xoff` is from the symbol's start; `module+0xoff` is the module's ELF
// virtual address (what `addr2line -e module 0xoff` and `nm` use; for a PIE or shared object,
// the distance from its load base).
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace hakmemd {

struct Mapping {
  uint64_t start = 0, end = 0, offset = 0;
  bool exec = false;
  std::string path;  // empty for anonymous mappings; "[vdso]" and the like kept as is
};

// Parses /proc/PID/maps; false (with *error) when it cannot be read.
bool read_maps(pid_t pid, std::vector<Mapping>* out, std::string* error);

struct ElfSymbol {
  uint64_t value = 0;  // ELF virtual address
  uint64_t size = 0;
  std::string name;       // as in the symbol table (mangled)
  std::string demangled;  // C++ names demangled; else == name
};

// One ELF file's loadable segments and function symbols.
class ElfModule {
 public:
  bool load(const std::string& path, std::string* error);
  // File offset <-> ELF virtual address through the PT_LOAD headers.
  bool file_to_vaddr(uint64_t file_off, uint64_t* vaddr) const;
  bool vaddr_to_file(uint64_t vaddr, uint64_t* file_off) const;
  // The function containing vaddr, or nullptr.
  const ElfSymbol* containing(uint64_t vaddr) const;
  // A defined function named `name` (raw, demangled, or demangled without parameters).
  const ElfSymbol* find(const std::string& name) const;

 private:
  struct Load {
    uint64_t offset, vaddr, filesz, memsz;
  };
  std::vector<Load> loads_;
  std::vector<ElfSymbol> syms_;  // sorted by value
};

struct Symbolized {
  uint64_t addr = 0;
  std::string module;        // full path ("" when the address is in no file mapping)
  uint64_t module_offset = 0;
  std::string function;      // "" when no symbol covers it
  uint64_t function_offset = 0;
  // "function+0xoff (module-basename)", or "module-basename+0xoff", or "0xaddr".
  std::string text() const;
  // The site in rule syntax: "function+0xoff", "module+0xoff" or "0xaddr".
  std::string spec() const;
};

class Symbolizer {
 public:
  Symbolized symbolize(const std::vector<Mapping>& maps, uint64_t addr);
  // A site spec (symbol[+off], module+off, or an address) -> run-time addresses in the
  // process of `maps`. `sampled` are the process's sampled call sites: a bare symbol (no
  // offset) names a function, and resolves to each sampled site inside it.
  bool resolve(const std::vector<Mapping>& maps, const std::string& spec, const std::vector<uint64_t>& sampled,
               std::vector<uint64_t>* out, std::string* error);
  // The sampled call sites inside the function `name` (sorted; possibly none): true when some
  // executable module of the process defines it, false with *error when none does.
  bool function_sites(const std::vector<Mapping>& maps, const std::string& name, const std::vector<uint64_t>& sampled,
                      std::vector<uint64_t>* out, std::string* error);
  size_t cached_modules() const { return cache_.size(); }

 private:
  std::shared_ptr<ElfModule> module(const std::string& path);
  // Run-time address of vaddr in the module mapped from `path`.
  bool runtime_addr(const std::vector<Mapping>& maps, const std::string& path, const ElfModule& m, uint64_t vaddr,
                    uint64_t* out);
  std::map<std::string, std::shared_ptr<ElfModule>> cache_;  // "path\0inode\0mtime"
  std::map<std::string, std::string> failed_;                // same key -> load error
};

// Parses "0x1c", "28": false on anything else.
bool parse_offset(const std::string& s, uint64_t* out);
// True when a site spec is a bare function name (no "+OFF", not an address): it stands for
// every call site inside the function, known only as the process samples them.
bool site_names_function(const std::string& spec);

}  // namespace hakmemd
